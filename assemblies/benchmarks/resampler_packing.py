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


import torch
from torch import Tensor

from assemblies.benchmarks.measure import compare_packed_padded, print_comparison
from blocks.resampler import resampler3d

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
    counts = (inputs[1][:, 0] * inputs[1][:, 1]).tolist()
    frames_per_group = inputs[3].tolist()
    longest_slice = max(counts)
    figures: dict = {
        "scale": scale, "device": str(target), "repeats": repeats,
        "sizes": {"num_queries": num_queries, "embed_dim": embed_dim, "kv_dim": kv_dim, "num_heads": num_heads},
        "patches": sum(counts), "groups": len(frames_per_group),
        "padded_key_rows": len(frames_per_group) * max(frames_per_group) * longest_slice,
    }
    figures.update(compare_packed_padded(model, inputs, target, repeats))
    _print_table(figures)
    return figures


def _print_table(figures: dict) -> None:
    print_comparison(f"resampler packing, scale={figures['scale']} {figures['sizes']} on {figures['device']}, "
                     f"{figures['patches']} patches in {figures['groups']} groups "
                     f"(padded path: {figures['padded_key_rows']} key rows); median of {figures['repeats']}", figures)


if __name__ == "__main__":
    run()
