"""Slicing geometry against all 80 official cases of slicing.json, plus the rounding traps."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from blocks.data.placeholders import image_placeholder
from blocks.data.slicing import ensure_divide, find_best_resize, get_sliced_grid, plan_slices, slice_image


@pytest.fixture(scope="module")
def slicing_cases(golden_dir):
    data = json.loads((golden_dir / "slicing.json").read_text())
    assert (data["scale_resolution"], data["patch_size"], data["image_feature_size"]) == (448, 14, 64)
    assert len(data["cases"]) == 80
    return data["cases"]


def _as_size(value):
    return tuple(value) if value is not None else None


def test_all_official_cases(slicing_cases):
    for case in slicing_cases:
        size, k = tuple(case["image_size"]), case["max_slice_nums"]
        where = f"{size} k={k}"
        geometry = plan_slices(size, k)
        assert geometry.grid == _as_size(case["grid"]), where
        assert geometry.source_size == tuple(case["source_size"]), where
        assert geometry.refine_size == _as_size(case["refine_size"]), where
        assert geometry.slice_size == _as_size(case["slice_size"]), where
        assert geometry.num_slices == case["num_slices_total"], where
        assert [list(t) for t in geometry.tgt_sizes] == case["tgt_sizes"], where
        tokens = [64] * geometry.num_slices
        assert image_placeholder(tokens, geometry.grid) == case["placeholder"]["use_image_id_false"], where
        assert image_placeholder(tokens, geometry.grid, image_id=case["image_idx"]) == \
            case["placeholder"]["use_image_id_true"], where
        assert sum(tokens) == case["num_image_tokens"], where


def test_round_half_to_even_and_asymmetry():
    assert ensure_divide(63, 14) == 56  # 4.5 -> 4 (round-half-up would give 70)
    assert ensure_divide(3, 14) == 14  # never below one patch
    assert find_best_resize((5000, 100), allow_upscale=True) == (3150, 56)
    assert find_best_resize((100, 5000), allow_upscale=True) == (56, 3164)
    assert find_best_resize((300, 200)) == (294, 196)  # small images keep their size unless upscaling
    assert find_best_resize((300, 200), allow_upscale=True) == (546, 364)


def test_grid_choice():
    assert get_sliced_grid((448, 448), 9) is None
    assert get_sliced_grid((1344, 1344), 9) == (3, 3)
    assert get_sliced_grid((1344, 1344), 4) == (2, 2)
    assert get_sliced_grid((1000, 700), 9) == (2, 2)
    assert get_sliced_grid((1000, 700), 1) is None


def test_slice_image_sizes_and_order():
    img = Image.new("RGB", (1000, 700))
    # paint the top-left quarter so the first cell can be told apart from the others
    img.paste((255, 0, 0), (0, 0, 500, 350))
    slices = slice_image(img)
    assert [s.size for s in slices] == [(532, 378)] + [(532, 378)] * 4
    assert slices[1].getpixel((100, 100)) == (255, 0, 0)
    assert slices[2].getpixel((400, 100)) == (0, 0, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_slice_nums"):
        plan_slices((10, 10), 0)
    with pytest.raises(ValueError, match="positive"):
        plan_slices((0, 10), 9)
