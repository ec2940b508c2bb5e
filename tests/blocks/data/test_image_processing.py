"""Pixel processing: bit-exact against the official processor's goldens; layouts; edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from blocks.data.image_processing import (normalize_u8, official_to_patch_rows, patch_rows_to_official, process_image,
                                          split_slices)
from blocks.data.slicing import plan_slices, slice_image
from golden_helpers import golden_case, sha256_f32


def official_slices(img: Image.Image, max_slice_nums: int) -> list[torch.Tensor]:
    """Our output of ``img`` converted to the official [3, 14, L] per-slice layout."""
    geometry = plan_slices(img.size, max_slice_nums)
    return [patch_rows_to_official(s) for s in split_slices(process_image(img, geometry), geometry.tgt_sizes)]


def test_normalisation_values():
    values = normalize_u8(np.array([0, 1, 127, 128, 255], dtype=np.uint8))
    assert values.dtype == np.float32
    assert values[0] == -1.0 and values[-1] == 1.0
    assert np.allclose(values, [-1, 2 / 255 - 1, 254 / 255 - 1, 256 / 255 - 1, 1], atol=1e-7, rtol=0)


@pytest.mark.parametrize("k", [1, 2])
def test_full_uint8_slice_equals_official(golden_dir, k):
    meta, tensors, images = golden_case(golden_dir, k)
    _, img = images[0]
    ours = official_slices(img, meta["processor_call"]["effective_max_slice_nums"])[0]
    codes = torch.from_numpy(tensors["pixel_values_b0_0_u8"])  # [3, 14, L] uint8
    assert ours.shape == codes.shape
    expected = torch.from_numpy(normalize_u8(codes.numpy()))
    assert torch.equal(ours, expected)
    assert sha256_f32(ours) == meta["pixel_values"][0][0]["sha256"]


@pytest.mark.parametrize("k", range(1, 8))
def test_every_slice_hash_and_stats(golden_dir, k):
    meta, _, images = golden_case(golden_dir, k)
    call = meta["processor_call"]
    produced: list[list[torch.Tensor]] = [[] for _ in meta["pixel_values"]]
    for batch, img in images:
        produced[batch] += official_slices(img, call["effective_max_slice_nums"])
    for batch, expected_slices in enumerate(meta["pixel_values"]):
        assert len(produced[batch]) == len(expected_slices)
        for ours, expected in zip(produced[batch], expected_slices):
            assert list(ours.shape) == expected["shape"]
            flat = ours.flatten()
            for index, value in expected["samples_flat_index_value"]:
                assert flat[index].item() == value
            assert flat.double().sum().item() == pytest.approx(expected["sum_f64"], abs=1e-6)
            assert (flat.min().item(), flat.max().item()) == (expected["min"], expected["max"])
            assert sha256_f32(ours) == expected["sha256"]


def test_layout_round_trip_and_patch_content():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (700, 1000, 3), dtype=np.uint8))
    geometry = plan_slices(img.size, 9)
    rows = process_image(img, geometry)
    assert rows.shape == (geometry.num_patches, 588) and rows.dtype == torch.float32
    for piece, pil_slice, (h, w) in zip(split_slices(rows, geometry.tgt_sizes), slice_image(img), geometry.tgt_sizes):
        assert torch.equal(official_to_patch_rows(patch_rows_to_official(piece)), piece)
        # patch n = (r, c) holds pixels [14r:14r+14, 14c:14c+14] of the slice, flattened (channel, y, x)
        pixels = normalize_u8(np.asarray(pil_slice))
        n = w + 2  # second patch row, third column
        block = pixels[14:28, 28:42].transpose(2, 0, 1).reshape(-1)
        assert np.array_equal(piece[n].numpy(), block)
        assert piece.shape[0] == h * w


def test_modes_are_converted_like_official_and_plan_must_match():
    rgba = Image.new("RGBA", (50, 30), (10, 20, 30, 0))
    assert torch.equal(process_image(rgba), process_image(rgba.convert("RGB")))
    grey = Image.new("L", (3, 1), 128)  # 1-px-high: the official processor crashes here (quirks.json); we do not
    out = process_image(grey)
    assert out.shape[0] == plan_slices((3, 1), 9).num_patches
    assert torch.allclose(out, torch.full_like(out, normalize_u8(np.array([128], np.uint8))[0]))
    with pytest.raises(ValueError, match="slicing plan"):
        process_image(rgba, plan_slices((60, 30), 9))
