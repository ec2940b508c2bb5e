"""Packed vs padded NaViT SigLIP on one batch of slices of different sizes: time and peak memory.

The official tower pads every slice of the batch to the longest one ([S, max h*w, D] with a
key-padding mask) and runs the padded rows through every layer. ``NaViTSiglip.forward`` runs only
the real patches and attends per slice (``blocks.attention.packed_attention``, sdpa bucketed by
slice length on CPU, xformers block-diagonal on CUDA).

Batches (``BATCHES``), (h, w) patches per slice:

- ``mixed``: a sliced image (overview 32x32, grid slices 32x32, 24x40, 16x28) and four 16x16 video
  frames: 4,480 patches, 8,192 padded rows (55% real).
- ``official``: one 1920x1080 image under the released slicing (max 9 slices): an overview of 24x43
  and eight 34x30 slices. The official slicing keeps every slice near 1,024 patches, so padding is
  small there (99% real) and packing gains little: the figure to expect for plain image batches.

Both paths run in ONE process, interleaved repeat by repeat, fp32; the median is reported. Peak
memory uses ``resampler_packing.peak_bytes`` (CUDA allocator statistics, or on CPU the live bytes of
the tensors the step creates). Full-width so400m layers take seconds each on a small CPU, so the
tower is cut to ``depth`` layers: every layer costs the same, so the ratios hold for 27.

    python -m assemblies.benchmarks.vision_packing [--repeats 3] [--scale so400m] [--depth 1] [--train]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
from torch import Tensor

# the resampler benchmark's probes, shared so both benchmarks measure alike
from assemblies.benchmarks.resampler_packing import _timed, peak_bytes
from blocks.vision.navit_siglip import NaViTSiglip, navit_siglip

# (width, heads, mlp_dim): "so400m" is the released layer; "tiny" is for smoke tests.
SCALES = {"so400m": (1152, 16, 4304), "tiny": (64, 2, 128)}
BATCHES = {
    "mixed": [(32, 32), (32, 32), (24, 40), (16, 28)] + [(16, 16)] * 4,
    "official": [(24, 43)] + [(34, 30)] * 8,
}


def slice_batch(sizes: list[tuple[int, int]], patch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(patches [N, 3*P*P] random, tgt_sizes [S, 2]) for slices of the given patch sizes."""
    tgt_sizes = torch.tensor(sizes, device=device)
    return torch.randn(sum(h * w for h, w in sizes), 3 * patch_size ** 2, device=device), tgt_sizes


def _steps(tower: NaViTSiglip, inputs: tuple[Tensor, Tensor], train: bool) -> dict[str, Callable[[], None]]:
    def forward(path: Callable) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                path(*inputs)
        return step

    def backward(path: Callable) -> Callable[[], None]:
        def step() -> None:
            tower.zero_grad(set_to_none=True)
            path(*inputs).square().mean().backward()
        return step

    steps = {"forward_packed": forward(tower.forward), "forward_padded": forward(tower.forward_padded)}
    if train:
        steps.update(train_packed=backward(tower.forward), train_padded=backward(tower.forward_padded))
    return steps


def run(repeats: int = 3, scale: str = "so400m", depth: int | None = None, batch: str = "mixed",
        train: bool = False, device: str | None = None) -> dict:
    """Time and measure packed vs padded vision forward (and forward+backward with ``train``); print a table.

    Args:
        repeats: timed repeats per step after one warm-up; the median is reported.
        scale: a key of ``SCALES`` (layer width/heads/MLP).
        depth: number of layers; default the released 27 on CUDA, 1 on CPU (every layer costs the same).
        batch: a key of ``BATCHES``.
        train: also time forward+backward.
        device: default CUDA when available, else CPU.

    Returns:
        Figures: seconds and peak bytes per step and path, packed/padded ratios, patch and padded
        row counts and the max abs difference of the two outputs.
    """
    if scale not in SCALES or batch not in BATCHES:
        raise ValueError(f"scale must be one of {sorted(SCALES)} and batch one of {sorted(BATCHES)}")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    width, heads, mlp_dim = SCALES[scale]
    depth = depth or (27 if target.type == "cuda" else 1)
    tower = navit_siglip(width, depth, heads, mlp_dim).to(target)
    inputs = slice_batch(BATCHES[batch], tower.patch_size, target)
    steps = _steps(tower, inputs, train)

    with torch.no_grad():
        max_abs_diff = (tower(*inputs) - tower.forward_padded(*inputs)).abs().max().item()
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved, so machine load hits both paths alike
            times[name].append(_timed(step, target))
    peaks = {name: peak_bytes(step, [*tower.parameters(), *inputs], target) for name, step in steps.items()}

    counts = (inputs[1][:, 0] * inputs[1][:, 1]).tolist()
    figures: dict = {
        "scale": scale, "batch": batch, "depth": depth, "device": str(target), "repeats": repeats,
        "sizes": {"width": width, "heads": heads, "mlp_dim": mlp_dim},
        "patches": sum(counts), "slices": len(counts), "padded_rows": len(counts) * max(counts),
        "max_abs_diff": max_abs_diff,
    }
    for name in steps:
        figures[f"seconds_{name}"] = statistics.median(times[name])
        figures[f"peak_bytes_{name}"] = peaks[name]
    for kind in ("forward", "train") if train else ("forward",):
        figures[f"time_ratio_{kind}"] = figures[f"seconds_{kind}_packed"] / figures[f"seconds_{kind}_padded"]
        figures[f"memory_ratio_{kind}"] = figures[f"peak_bytes_{kind}_packed"] / figures[f"peak_bytes_{kind}_padded"]
    _print_table(figures)
    return figures


def _print_table(figures: dict) -> None:
    print(f"vision packing, {figures['scale']} {figures['sizes']} x {figures['depth']} layer(s) on "
          f"{figures['device']}, batch {figures['batch']!r}: {figures['patches']} patches in {figures['slices']} "
          f"slices (padded path: {figures['padded_rows']} rows); median of {figures['repeats']}")
    print(f"{'step':<18}{'packed s':>10}{'padded s':>10}{'ratio':>8}{'packed MiB':>12}{'padded MiB':>12}{'ratio':>8}")
    for kind, label in (("forward", "forward"), ("train", "forward+backward")):
        if f"time_ratio_{kind}" not in figures:
            continue
        packed_s, padded_s = figures[f"seconds_{kind}_packed"], figures[f"seconds_{kind}_padded"]
        packed_m, padded_m = (figures[f"peak_bytes_{kind}_{path}"] / 2**20 for path in ("packed", "padded"))
        print(f"{label:<18}{packed_s:>10.3f}{padded_s:>10.3f}{figures[f'time_ratio_{kind}']:>8.2f}"
              f"{packed_m:>12.1f}{padded_m:>12.1f}{figures[f'memory_ratio_{kind}']:>8.2f}")
    print(f"max |packed - padded| = {figures['max_abs_diff']:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", choices=sorted(SCALES), default="so400m")
    parser.add_argument("--depth", type=int, default=None, help="default 27 on CUDA, 1 on CPU")
    parser.add_argument("--batch", choices=sorted(BATCHES), default="mixed")
    parser.add_argument("--train", action="store_true", help="also time forward+backward")
    args = parser.parse_args()
    run(args.repeats, args.scale, args.depth, args.batch, args.train)


if __name__ == "__main__":
    main()
