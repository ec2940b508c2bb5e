"""LLaVA-UHD image slicing geometry, exactly as MiniCPM-V 4.5's image processor computes it.

An image becomes a *source* slice (the whole image resized to about ``scale_resolution**2`` pixels)
plus, when it is large enough, a ``cols x rows`` grid of cells cut from a *refine* image. Every side
is a multiple of ``patch_size``. All sizes here are PIL order ``(width, height)``; ``tgt_sizes`` are
``(patch_rows, patch_cols)`` as the vision tower wants them.

The arithmetic deliberately reproduces the official code's rounding, because token counts and pixel
values must match the released model bit for bit:

- ``ensure_divide`` uses Python ``round`` (half to even): 63/14 = 4.5 rounds to 4.
- ``find_best_resize`` derives the height first, then ``width = int(height * ratio)`` in float64,
  so transposed inputs do not give transposed sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

Size = tuple[int, int]

SCALE_RESOLUTION = 448
PATCH_SIZE = 14


def ensure_divide(length: float, multiple: int) -> int:
    """``length`` rounded (half to even) to a multiple of ``multiple``, at least ``multiple``."""
    return max(round(length / multiple) * multiple, multiple)


def find_best_resize(size: tuple[float, float], scale_resolution: int = SCALE_RESOLUTION,
                     patch_size: int = PATCH_SIZE, allow_upscale: bool = False) -> Size:
    """Aspect-preserving size of area about ``scale_resolution**2``, sides multiples of ``patch_size``.

    Images at most that large keep their size (rounded to the patch grid) unless ``allow_upscale``.
    """
    width, height = size
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        ratio = width / height
        height = int(scale_resolution / math.sqrt(ratio))
        width = int(height * ratio)
    return ensure_divide(width, patch_size), ensure_divide(height, patch_size)


def get_sliced_grid(size: Size, max_slice_nums: int, scale_resolution: int = SCALE_RESOLUTION) -> Size | None:
    """The ``(cols, rows)`` grid for an image of ``size``, or ``None`` when it is not sliced.

    The ideal count is ``ceil(area / scale_resolution**2)`` capped at ``max_slice_nums``; among the
    factorisations of that count and its neighbours (never 1, never above the cap) the grid whose
    aspect ratio is closest in log space wins (first one on ties, in enumeration order).
    """
    width, height = size
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)), max_slice_nums)
    if multiple <= 1:
        return None
    log_ratio = math.log(width / height)
    best, best_error = None, float("inf")
    for count in (multiple - 1, multiple, multiple + 1):
        if count == 1 or count > max_slice_nums:
            continue
        for cols in range(1, count + 1):
            if count % cols:
                continue
            error = abs(log_ratio - math.log(cols / (count // cols)))
            if error < best_error:
                best, best_error = (cols, count // cols), error
    return best


def get_refine_size(size: Size, grid: Size, scale_resolution: int = SCALE_RESOLUTION,
                    patch_size: int = PATCH_SIZE, allow_upscale: bool = True) -> Size:
    """Size of the image that is cut into ``grid`` cells, each cell resized to about ``scale_resolution**2``."""
    cols, rows = grid
    cell = (ensure_divide(size[0], cols) / cols, ensure_divide(size[1], rows) / rows)
    cell_w, cell_h = find_best_resize(cell, scale_resolution, patch_size, allow_upscale=allow_upscale)
    return cell_w * cols, cell_h * rows


@dataclass(frozen=True)
class SliceGeometry:
    """Where every slice of one image comes from.

    Attributes:
        image_size: (w, h) of the original image.
        source_size: (w, h) of the resized whole image (slice 0).
        grid: (cols, rows) of the cells, or None when the image is not sliced.
        refine_size: (w, h) of the resized image the cells are cut from (None if not sliced).
        slice_size: (w, h) of every cell (None if not sliced).
        patch_size: side of a ViT patch in pixels.
    """

    image_size: Size
    source_size: Size
    grid: Size | None
    refine_size: Size | None
    slice_size: Size | None
    patch_size: int = PATCH_SIZE

    @property
    def num_slices(self) -> int:
        return 1 + (self.grid[0] * self.grid[1] if self.grid else 0)

    @property
    def tgt_sizes(self) -> list[Size]:
        """(patch_rows, patch_cols) of the source, then of each cell (row by row)."""
        p = self.patch_size
        sizes = [(self.source_size[1] // p, self.source_size[0] // p)]
        if self.grid:
            sizes += [(self.slice_size[1] // p, self.slice_size[0] // p)] * (self.grid[0] * self.grid[1])
        return sizes

    @property
    def num_patches(self) -> int:
        return sum(h * w for h, w in self.tgt_sizes)

    def cell_boxes(self) -> list[tuple[int, int, int, int]]:
        """(left, top, right, bottom) of each cell in the refine image, row by row."""
        if not self.grid:
            return []
        cw, ch = self.slice_size
        return [(c * cw, r * ch, (c + 1) * cw, (r + 1) * ch) for r in range(self.grid[1]) for c in range(self.grid[0])]


def plan_slices(image_size: Size, max_slice_nums: int = 9, scale_resolution: int = SCALE_RESOLUTION,
                patch_size: int = PATCH_SIZE) -> SliceGeometry:
    """The slicing of an image of ``image_size`` (w, h); pure arithmetic, no pixels touched."""
    if max_slice_nums < 1:
        raise ValueError(f"max_slice_nums must be >= 1, got {max_slice_nums}")
    if min(image_size) < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    grid = get_sliced_grid(image_size, max_slice_nums, scale_resolution)
    if grid is None:
        source = find_best_resize(image_size, scale_resolution, patch_size, allow_upscale=True)
        return SliceGeometry(tuple(image_size), source, None, None, None, patch_size)
    # The thumbnail is only ever downscaled; the cells are upscaled as needed.
    source = find_best_resize(image_size, scale_resolution, patch_size, allow_upscale=False)
    refine = get_refine_size(image_size, grid, scale_resolution, patch_size, allow_upscale=True)
    cell = (refine[0] // grid[0], refine[1] // grid[1])
    return SliceGeometry(tuple(image_size), source, grid, refine, cell, patch_size)


def slice_image(img: Image.Image, max_slice_nums: int = 9, scale_resolution: int = SCALE_RESOLUTION,
                patch_size: int = PATCH_SIZE) -> list[Image.Image]:
    """The slices of ``img`` as PIL images: the resized source first, then the cells row by row.

    Resampling is PIL BICUBIC, as in the official processor (antialiased when downscaling).
    """
    geometry = plan_slices(img.size, max_slice_nums, scale_resolution, patch_size)
    slices = [img.resize(geometry.source_size, Image.Resampling.BICUBIC)]
    if geometry.grid:
        refine = img.resize(geometry.refine_size, Image.Resampling.BICUBIC)
        slices += [refine.crop(box) for box in geometry.cell_boxes()]
    return slices
