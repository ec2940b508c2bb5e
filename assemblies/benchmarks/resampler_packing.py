"""Packed vs padded resampler on one mixed batch: time and peak memory, forward and forward+backward.

The batch is what a sliced image plus a short video produce: an overview slice of 32x32 patches,
three grid slices of 32x32, 24x40 and 16x28, and one group of six 32x32 video frames (9,600 patches
in 5 groups). The official code (``forward_padded``) pads every slice to the longest slice and every
group to the longest group, so the 6-frame group sets the key length for all five groups: 30,720 key
rows, 3.2x the real patches, all of them run through the key/value projections and the attention.
The packed path (``forward``) projects only real patches and attends per group without a mask.

Both paths run in ONE process, interleaved repeat by repeat, fp32; the median time is reported.
Peak memory:

- CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated before the step.
- CPU (no allocator statistics): a ``TorchDispatchMode`` sees every aten op of the step (forward and
  backward) and tracks the storages it creates until they are freed (weak storage references, so
  tensors kept alive by autograd count too). The peak of their summed bytes, sampled after every op,
  is the step's peak beyond parameters and inputs. Kernel-internal scratch is not seen, which favours
  neither path (both use the same kernels).

    python -m assemblies.benchmarks.resampler_packing            # or: python tasks/benchmark.py
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from blocks.resampler import PerceiverResampler, resampler3d

# (num_queries, embed_dim, kv_dim, num_heads). "mcpv45" is the released size; on 2 CPU cores one
# repeat takes minutes there, so "cpu" keeps the token layout and query count at a quarter of the width.
SCALES = {
    "mcpv45": (64, 4096, 1152, 32),
    "cpu": (64, 1024, 1152, 8),
    "tiny": (16, 64, 64, 2),
}
IMAGE_SLICES = [(32, 32), (32, 32), (24, 40), (16, 28)]  # overview + three grid slices
VIDEO_FRAMES, FRAME_SIZE = 6, (32, 32)


def mixed_batch(kv_dim: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x [N, kv_dim], tgt_sizes [S, 2], temporal_ids [S], group_sizes [G]) of the benchmark batch."""
    sizes = IMAGE_SLICES + [FRAME_SIZE] * VIDEO_FRAMES
    tgt_sizes = torch.tensor(sizes, device=device)
    temporal_ids = torch.tensor([-1] * len(IMAGE_SLICES) + [5 * i for i in range(VIDEO_FRAMES)], device=device)
    group_sizes = torch.tensor([1] * len(IMAGE_SLICES) + [VIDEO_FRAMES], device=device)
    x = torch.randn(sum(h * w for h, w in sizes), kv_dim, device=device)
    return x, tgt_sizes, temporal_ids, group_sizes


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created under this mode and still alive (CPU memory probe).

    Args:
        preexisting: tensors whose storage must not count (parameters, inputs), e.g. when an
            in-place op or a view returns them.
    """

    def __init__(self, preexisting: list[Tensor]) -> None:
        super().__init__()
        self.ignored = {StorageWeakRef(t.untyped_storage()).cdata for t in preexisting}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def release_expired(self) -> None:
        """Forget the storages freed since the last op; ``current`` is then the live total."""
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.release_expired()
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, Tensor):
                continue
            ref = StorageWeakRef(tensor.untyped_storage())
            if ref.cdata not in self.ignored and ref.cdata not in self.live:
                self.live[ref.cdata] = (ref, tensor.untyped_storage().nbytes())
                self.current += self.live[ref.cdata][1]
        self.peak = max(self.peak, self.current)
        return out


def peak_bytes(step: Callable[[], None], preexisting: list[Tensor], device: torch.device) -> int:
    """Peak memory of ``step`` beyond what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with LiveTensorBytes(preexisting) as probe:
        step()
    return probe.peak


def _steps(model: PerceiverResampler, inputs: tuple[Tensor, ...]) -> dict[str, Callable[[], None]]:
    def forward(path: Callable) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                path(*inputs)
        return step

    def train(path: Callable) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            path(*inputs).square().mean().backward()
        return step

    return {"forward_packed": forward(model.forward), "forward_padded": forward(model.forward_padded),
            "train_packed": train(model.forward), "train_padded": train(model.forward_padded)}


def _timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def run(repeats: int = 3, scale: str = "auto", device: str | None = None) -> dict:
    """Time and measure the packed vs padded resampler; print a table.

    Args:
        repeats: timed repeats per step (after the memory pass, which doubles as warm-up); the
            median is reported.
        scale: a key of ``SCALES``, or "auto": "mcpv45" (the released size) on CUDA, "cpu" (a
            quarter of the width, same token layout) on CPU.
        device: default CUDA when available, else CPU.

    Returns:
        Figures: seconds and peak bytes per step and path, packed/padded ratios, key rows of each
        path and the max abs difference of the two outputs.
    """
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if scale == "auto":
        scale = "mcpv45" if target.type == "cuda" else "cpu"
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose 'auto' or one of {sorted(SCALES)}")
    num_queries, embed_dim, kv_dim, num_heads = SCALES[scale]
    model = resampler3d(num_queries, embed_dim, kv_dim, num_heads).to(target)
    inputs = mixed_batch(kv_dim, target)
    steps = _steps(model, inputs)

    with torch.no_grad():
        max_abs_diff = (model(*inputs) - model.forward_padded(*inputs)).abs().max().item()
    preexisting = [*model.parameters(), *inputs]
    # The memory pass runs every step once, so it is also the warm-up of the timed repeats.
    peaks = {name: peak_bytes(step, preexisting, target) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved, so machine load hits both paths alike
            times[name].append(_timed(step, target))

    counts = (inputs[1][:, 0] * inputs[1][:, 1]).tolist()
    frames_per_group = inputs[3].tolist()
    longest_slice = max(counts)
    figures: dict = {
        "scale": scale, "device": str(target), "repeats": repeats,
        "sizes": {"num_queries": num_queries, "embed_dim": embed_dim, "kv_dim": kv_dim, "num_heads": num_heads},
        "patches": sum(counts), "groups": len(frames_per_group),
        "padded_key_rows": len(frames_per_group) * max(frames_per_group) * longest_slice,
        "max_abs_diff": max_abs_diff,
    }
    for name in steps:
        figures[f"seconds_{name}"] = statistics.median(times[name])
        figures[f"peak_bytes_{name}"] = peaks[name]
    for kind in ("forward", "train"):
        figures[f"time_ratio_{kind}"] = figures[f"seconds_{kind}_packed"] / figures[f"seconds_{kind}_padded"]
        figures[f"memory_ratio_{kind}"] = figures[f"peak_bytes_{kind}_packed"] / figures[f"peak_bytes_{kind}_padded"]
    _print_table(figures)
    return figures


def _print_table(figures: dict) -> None:
    print(f"resampler packing, scale={figures['scale']} {figures['sizes']} on {figures['device']}, "
          f"{figures['patches']} patches in {figures['groups']} groups "
          f"(padded path: {figures['padded_key_rows']} key rows); median of {figures['repeats']}")
    print(f"{'step':<18}{'packed s':>10}{'padded s':>10}{'ratio':>8}{'packed MiB':>12}{'padded MiB':>12}{'ratio':>8}")
    for kind, label in (("forward", "forward"), ("train", "forward+backward")):
        packed_s, padded_s = figures[f"seconds_{kind}_packed"], figures[f"seconds_{kind}_padded"]
        packed_m, padded_m = (figures[f"peak_bytes_{kind}_{path}"] / 2**20 for path in ("packed", "padded"))
        print(f"{label:<18}{packed_s:>10.3f}{padded_s:>10.3f}{figures[f'time_ratio_{kind}']:>8.2f}"
              f"{packed_m:>12.1f}{padded_m:>12.1f}{figures[f'memory_ratio_{kind}']:>8.2f}")
    print(f"max |packed - padded| = {figures['max_abs_diff']:.2e}")


if __name__ == "__main__":
    run()
