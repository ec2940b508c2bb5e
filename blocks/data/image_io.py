"""Safe image loading: every file becomes an 8-bit RGB ``PIL.Image`` or a ``MediaError`` naming it.

What ``load_image`` guarantees, and why:

- The pixels are decoded at load time (``img.load()``), so a truncated or corrupt file fails here,
  with its path, not later inside a resize in a data-loader worker.
- The file is closed when the call returns, whatever happens: no handle leaks across thousands
  of samples per worker.
- The size is checked against ``max_pixels`` *before* decoding (a 50 kB PNG can declare 10^10
  pixels); Pillow's own decompression-bomb warning never leaks out, and its hard limit
  (2 x ``Image.MAX_IMAGE_PIXELS``, about 179 MP, checked while opening) becomes the same ``MediaError``.
- EXIF orientation is applied, so a phone photo is upright as the annotator saw it.
- Every mode maps to RGB with the right colours: alpha (RGBA, LA, P with transparency) is
  composited on white rather than dropped (dropping it turns transparent pixels black or into
  whatever colour the invisible pixels happen to hold); 16/32-bit integer images are *scaled* to
  8 bits (Pillow's own ``convert`` clips them, so a 16-bit scan would turn almost all white);
  float images are scaled from [0, 1] when they lie in it, else min-max normalised.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from blocks.data.errors import MediaError

# 8192 x 8192: far above anything the slicer keeps (about 1.8 MP reach the encoder), far below the
# multi-gigabyte allocations a hostile header can request.
DEFAULT_MAX_PIXELS = 8192 * 8192

_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_WHITE = (255, 255, 255)
_ORIENTATION = 0x0112  # EXIF tag


def load_image(source: str | os.PathLike | bytes, where: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file (or its bytes) into an upright 8-bit RGB image.

    Args:
        source: a path, or the encoded bytes of an image.
        where: where the image is referenced (e.g. ``"train.jsonl:17"``), included in errors.
        max_pixels: refuse images whose declared width*height exceeds this.

    Returns:
        A fully loaded ``PIL.Image`` in mode ``"RGB"``, detached from any file.

    Raises:
        MediaError: missing, empty, corrupt, truncated, zero-size, too large or unsupported image;
            the message names the path (``"<bytes>"`` for in-memory input) and ``where``.
    """
    with _opened(source, where, max_pixels) as image:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))


def image_size(source: str | os.PathLike | bytes, where: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the image ``load_image`` would return, read from the header only.

    Raises:
        MediaError: as ``load_image``, except that corrupt pixel data past the header goes unnoticed.
    """
    with _opened(source, where, max_pixels) as image:
        width, height = image.size
        transposed = image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)  # the 90/270-degree orientations
    return (height, width) if transposed else (width, height)


@contextmanager
def _opened(source: str | os.PathLike | bytes, where: str, max_pixels: int) -> Iterator[Image.Image]:
    """Open (not decode) an image, check its declared size, and turn every failure into a ``MediaError``."""
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else _open_file(name, where)
    try:
        with stream, warnings.catch_warnings():
            if stream.seek(0, io.SEEK_END) == 0:
                raise MediaError(f"{name}: empty file (0 bytes)", where=where, reason="empty_file")
            stream.seek(0)
            # Our own limit comes first; Pillow's warning would only spam logs (its hard error is caught below).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size  # never 0: Pillow refuses zero-size images while opening
            if width * height > max_pixels:
                raise MediaError(f"{name}: {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}",
                                 where=where, reason="too_large")
            yield image
    except MediaError:
        raise
    except Image.DecompressionBombError as error:
        raise MediaError(f"{name}: {error}", where=where, reason="too_large") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports corrupt data as any of these, depending on the codec.
        raise MediaError(f"{name}: cannot decode image ({type(error).__name__}: {error})",
                         where=where, reason="corrupt_image") from error


def _open_file(path: str, where: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError as error:
        raise MediaError(f"{path}: file not found", where=where, reason="missing_file") from error
    except OSError as error:  # a directory, no permission, ...
        raise MediaError(f"{path}: cannot read ({type(error).__name__}: {error})", where=where,
                         reason="unreadable_file") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode)).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map integer (16/32-bit) or float pixels [H, W] to uint8 without clipping the range away."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif mode != "F" and low >= 0 and high <= 65535:
        # 16-bit data (Pillow also stores 16-bit PNGs as "I"): the full 0..65535 range maps to 0..255.
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
