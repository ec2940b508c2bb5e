"""Pixels of the slices: resize, normalise and cut into packed patch rows (the data-loading hot path).

Output format (see ``blocks.batch``): one float32 row of ``3*P*P`` values per ViT patch, the patches of
a slice in row-major order and the slices one after another; a row is flattened in (channel, y, x)
order so a Conv2d patch-embedding weight ``[D, 3, P, P].flatten(1)`` applies as a linear map.

Values equal the official processor's bit for bit: PIL BICUBIC resize to uint8, then
``(u.astype(float32) / 255 - float32(0.5)) / float32(0.5)``, the same float32 operations in the same
order (IEEE arithmetic makes that exact, whatever the vectorisation).

Why this is fast (``assemblies/benchmarks/preprocessing.py`` measures it against a per-slice
PIL + numpy re-implementation of the official pipeline): one resize for the thumbnail and one for the
whole refine image (as the official code does), no per-slice crops or intermediate arrays: the uint8
pixels are cast straight into patch order in the preallocated float32 output, which is then
normalised in place (three vectorised passes; a 256-entry lookup table measured ~8x slower, because
numpy widens the uint8 indices first).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from blocks.data.slicing import SliceGeometry, plan_slices

NORM_MEAN = 0.5
NORM_STD = 0.5


def normalize_(values: np.ndarray, mean: float = NORM_MEAN, std: float = NORM_STD) -> np.ndarray:
    """In place on float32 ``values`` holding uint8 codes: ``(u / 255 - mean) / std`` in float32."""
    values /= np.float32(255)
    values -= np.float32(mean)
    values /= np.float32(std)
    return values


def normalize_u8(u8: np.ndarray) -> np.ndarray:
    """float32 normalised values of uint8 pixel codes (any shape)."""
    return normalize_(u8.astype(np.float32))


def _gather_patches(pixels: np.ndarray, grid: tuple[int, int], cell_patches: tuple[int, int], patch_size: int,
                    out: np.ndarray) -> None:
    """Write the normalised patch rows of an HWC uint8 image cut into ``grid`` cells into ``out``.

    Args:
        pixels: [rows*h*P, cols*w*P, 3] uint8.
        grid: (cols, rows) of cells; (1, 1) for a single slice.
        cell_patches: (h, w) patches per cell.
        out: [rows*cols*h*w, 3*P*P] float32, written in cell-major, then patch row-major order.
    """
    cols, rows = grid
    h, w = cell_patches
    p = patch_size
    # [rows, h, y, cols, w, x, c] -> [rows, cols, h, w, c, y, x]: cells row by row, patches row-major,
    # then each patch flattened (c, y, x).
    ordered = pixels.reshape(rows, h, p, cols, w, p, 3).transpose(0, 3, 1, 4, 6, 2, 5)
    np.copyto(out.reshape(rows, cols, h, w, 3, p, p), ordered, casting="unsafe")  # gather + uint8 -> float32
    normalize_(out)


def resized_slices_u8(img: Image.Image, geometry: SliceGeometry) -> tuple[np.ndarray, np.ndarray | None]:
    """The uint8 HWC pixels of the resized source and of the resized refine image (None if unsliced)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    source = np.asarray(img.resize(geometry.source_size, Image.Resampling.BICUBIC))
    refine = None
    if geometry.grid:
        refine = np.asarray(img.resize(geometry.refine_size, Image.Resampling.BICUBIC))
    return source, refine


def process_image(img: Image.Image, geometry: SliceGeometry | None = None, max_slice_nums: int = 9,
                  scale_resolution: int = 448, patch_size: int = 14, out: np.ndarray | None = None) -> torch.Tensor:
    """Packed patch rows of every slice of ``img``.

    Args:
        img: any PIL image (converted to RGB first, as the official processor does).
        geometry: the slicing plan; computed from the other arguments when None.
        out: optional float32 [geometry.num_patches, 3*P*P] C-contiguous array to write into (a slice
            of a sample's packed buffer, which saves a concatenation copy).

    Returns:
        [geometry.num_patches, 3*P*P] float32 (sharing memory with ``out`` when given): the source
        slice's patches, then each cell's.
    """
    if geometry is None:
        geometry = plan_slices(img.size, max_slice_nums, scale_resolution, patch_size)
    if tuple(img.size) != tuple(geometry.image_size):
        raise ValueError(f"image is {img.size} but the slicing plan was made for {geometry.image_size}")
    p = geometry.patch_size
    sizes = geometry.tgt_sizes
    if out is None:
        out = np.empty((geometry.num_patches, 3 * p * p), dtype=np.float32)
    elif out.shape != (geometry.num_patches, 3 * p * p) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {(geometry.num_patches, 3 * p * p)}, got {out.dtype} "
                         f"{out.shape}")
    source, refine = resized_slices_u8(img, geometry)
    n_source = sizes[0][0] * sizes[0][1]
    _gather_patches(source, (1, 1), sizes[0], p, out[:n_source])
    if refine is not None:
        _gather_patches(refine, geometry.grid, sizes[1], p, out[n_source:])
    return torch.from_numpy(out)


def patch_rows_to_official(rows: torch.Tensor, patch_size: int = 14) -> torch.Tensor:
    """[n, 3*P*P] patch rows of one slice -> the official ``reshape_by_patch`` layout [3, P, n*P]."""
    n = rows.shape[0]
    return rows.view(n, 3, patch_size, patch_size).permute(1, 2, 0, 3).reshape(3, patch_size, n * patch_size)


def official_to_patch_rows(pixel_values: torch.Tensor, patch_size: int = 14) -> torch.Tensor:
    """The official [3, P, n*P] layout of one slice -> [n, 3*P*P] patch rows."""
    n = pixel_values.shape[-1] // patch_size
    rows = pixel_values.reshape(3, patch_size, n, patch_size).permute(2, 0, 1, 3)
    return rows.reshape(n, 3 * patch_size * patch_size)


def split_slices(rows: torch.Tensor, tgt_sizes: list[tuple[int, int]] | torch.Tensor) -> list[torch.Tensor]:
    """Split packed patch rows into one [h*w, 3*P*P] tensor per slice."""
    counts = [int(h) * int(w) for h, w in (tgt_sizes.tolist() if isinstance(tgt_sizes, torch.Tensor) else tgt_sizes)]
    return list(rows.split(counts))
