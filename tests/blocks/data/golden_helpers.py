"""Golden processor cases for the data tests (test_image_processing, test_processor_golden)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file


def golden_case(golden_dir, k: int) -> tuple[dict, dict[str, np.ndarray], list[tuple[int, Image.Image]]]:
    """(json, tensors, [(batch index, PIL image)]) of processor case ``k``; images checked by sha256."""
    base = golden_dir / "processor" / f"case_{k}"
    meta = json.loads(base.with_suffix(".json").read_text())
    tensors = load_file(str(base.with_suffix(".safetensors")))
    images = []
    for item in meta["images"]:
        pixels = tensors[item["key"]]
        if item["stored"] == "base":  # case 2: a 10x block repeat of a small random image
            pixels = np.repeat(np.repeat(pixels, item["repeat_factor"], axis=0), item["repeat_factor"], axis=1)
        assert hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest() == item["sha256_full_uint8_hwc"]
        images.append((item["batch"], Image.fromarray(pixels)))
    return meta, tensors, images


def sha256_f32(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()
