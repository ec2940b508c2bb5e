"""load_image: colours of every mode, orientation, and that files are decoded eagerly and closed."""

from __future__ import annotations

import gc
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from blocks.data.errors import MediaError
from blocks.data.image_io import image_size, load_image, to_rgb


def _png_bytes(image: Image.Image, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save_kwargs)
    return buffer.getvalue()


def test_rgb_png_roundtrip_is_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 7)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_bytes_input_and_grayscale_modes():
    gray = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8))
    assert np.asarray(load_image(_png_bytes(gray))).tolist() == [[[0] * 3, [100] * 3, [255] * 3]]
    binary = Image.fromarray(np.array([[True, False]]))
    assert binary.mode == "1"
    assert np.asarray(load_image(_png_bytes(binary))).tolist() == [[[255] * 3, [0] * 3]]


def test_float_image_in_unit_range_scales_by_255():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert image.mode == "F"
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 128, 255]


def test_float_image_outside_unit_range_is_min_max_normalised():
    image = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32))
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 128, 255]


def test_32bit_integer_image_above_16_bits_is_min_max_normalised():
    image = Image.fromarray(np.array([[0, 50_000, 100_000]], dtype=np.int32))
    assert image.mode == "I"
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 128, 255]


def test_file_handle_is_closed(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        image = load_image(path)
        gc.collect()
    assert image.getpixel((0, 0)) == (1, 2, 3)
    # Decoded eagerly: the image no longer needs its file.
    path.unlink()
    assert image.resize((2, 2)).getpixel((0, 0)) == (1, 2, 3)


def test_directory_is_a_media_error(tmp_path):
    with pytest.raises(MediaError, match=str(tmp_path)) as info:
        load_image(tmp_path, where="data.jsonl:3")
    assert info.value.where == "data.jsonl:3"


def test_jpeg_decodes_close_to_source(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (16, 16), (200, 40, 90)).save(path, quality=95)
    pixel = np.asarray(load_image(path))[8, 8].astype(int)
    assert np.abs(pixel - [200, 40, 90]).max() <= 3


def test_image_size_reads_the_header_and_honours_exif_rotation(tmp_path):
    image = Image.new("RGB", (40, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    image.save(tmp_path / "r.png", exif=exif)
    assert image_size(tmp_path / "r.png") == (10, 40) == load_image(tmp_path / "r.png").size
    Image.new("RGB", (40, 10)).save(tmp_path / "plain.png")
    assert image_size(tmp_path / "plain.png") == (40, 10)
    with pytest.raises(MediaError, match="exceeds max_pixels=399"):
        image_size(tmp_path / "plain.png", max_pixels=399)
