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
memory uses ``measure.peak_bytes`` (CUDA allocator statistics, or on CPU the live bytes of
the tensors the step creates). Full-width so400m layers take seconds each on a small CPU, so the
tower is cut to ``depth`` layers: every layer costs the same, so the ratios hold for 27.

    python -m assemblies.benchmarks.vision_packing [--repeats 3] [--scale so400m] [--depth 1] [--train]
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

from assemblies.benchmarks.measure import compare_packed_padded, print_comparison
from blocks.vision.navit_siglip import navit_siglip

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
    counts = (inputs[1][:, 0] * inputs[1][:, 1]).tolist()
    figures: dict = {
        "scale": scale, "batch": batch, "depth": depth, "device": str(target), "repeats": repeats,
        "sizes": {"width": width, "heads": heads, "mlp_dim": mlp_dim},
        "patches": sum(counts), "slices": len(counts), "padded_rows": len(counts) * max(counts),
    }
    figures.update(compare_packed_padded(tower, inputs, target, repeats, train))
    _print_table(figures)
    return figures


def _print_table(figures: dict) -> None:
    print_comparison(f"vision packing, {figures['scale']} {figures['sizes']} x {figures['depth']} layer(s) on "
                     f"{figures['device']}, batch {figures['batch']!r}: {figures['patches']} patches in "
                     f"{figures['slices']} slices (padded path: {figures['padded_rows']} rows); "
                     f"median of {figures['repeats']}", figures)


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
