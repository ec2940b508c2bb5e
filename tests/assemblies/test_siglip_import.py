"""Importing HF SigLIP / SigLIP2 towers: outputs equal the HF model's where the import is exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (Siglip2VisionConfig, Siglip2VisionModel, SiglipConfig, SiglipModel, SiglipVisionConfig,
                          SiglipVisionModel)

from assemblies.checkpoints.siglip import load_siglip_vision, resize_patch_kernel
from blocks.vision import navit_siglip

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
GRID = 70  # a 70 x 70-patch input is where every conversion is exact


def random_patches(n: int, size: int = 14) -> torch.Tensor:
    """[n, 3, size, size] smooth-ish random patches."""
    return torch.randn(n, 3, size // 2, size // 2).repeat_interleave(2, -1).repeat_interleave(2, -2)


def upsample(patches14: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(patches14.double(), size=(size, size), mode="bilinear", align_corners=False).float()


def as_image(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """[grid*grid, 3, p, p] -> [1, 3, grid*p, grid*p]."""
    p = patches.shape[-1]
    return patches.view(grid, grid, 3, p, p).permute(2, 0, 3, 1, 4).reshape(1, 3, grid * p, grid * p)


def ours(tower, patches14: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tower(patches14.flatten(1), torch.tensor([[GRID, GRID]]))


def test_siglip_native_70x70_grid_is_exact(tmp_path):
    hf = SiglipVisionModel(SiglipVisionConfig(image_size=980, patch_size=14, **TINY)).eval()
    hf.save_pretrained(tmp_path)
    tower, report = load_siglip_vision(tmp_path, attn_backend="sdpa")
    patches = random_patches(GRID * GRID)
    with torch.no_grad():
        expected = hf(pixel_values=as_image(patches, GRID)).last_hidden_state[0]
    assert (ours(tower, patches) - expected).abs().max() < 2e-5
    assert report.family == "siglip" and report.notes == []
    assert "head.probe" in report.ignored and len(report.loaded) == len(tower.state_dict())


def test_siglip_full_model_patch16_small_grid(tmp_path):
    """SiglipModel (text tower dropped), patch 16 -> 14 kernel, 4x4 table -> 70x70 (bicubic)."""
    config = SiglipConfig(vision_config=dict(image_size=64, patch_size=16, **TINY),
                          text_config=dict(vocab_size=99, bos_token_id=1, eos_token_id=2, **TINY))
    hf = SiglipModel(config).eval()
    hf.save_pretrained(tmp_path)
    tower, report = load_siglip_vision(tmp_path)
    patches = random_patches(GRID * GRID)
    with torch.no_grad():
        expected = hf.vision_model(pixel_values=as_image(upsample(patches, 16), GRID),
                                   interpolate_pos_encoding=True).last_hidden_state[0]
    assert (ours(tower, patches) - expected).abs().max() < 2e-5
    assert any(k.startswith("text_model.") for k in report.ignored) and "logit_scale" in report.ignored
    assert [n.split(" ")[0] for n in report.notes] == ["patch", "position"]


def test_siglip2_naflex_patch16_sharded(tmp_path):
    """Siglip2 (Linear over (y, x, c) patches, 16x16 table resized per image) saved in shards."""
    hf = Siglip2VisionModel(Siglip2VisionConfig(num_patches=256, patch_size=16, **TINY)).eval()
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    tower, report = load_siglip_vision(tmp_path)
    patches = random_patches(GRID * GRID)
    pixel_values = upsample(patches, 16).permute(0, 2, 3, 1).reshape(1, GRID * GRID, -1)
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values, pixel_attention_mask=torch.ones(1, GRID * GRID, dtype=torch.long),
                      spatial_shapes=torch.tensor([[GRID, GRID]])).last_hidden_state[0]
    assert (ours(tower, patches) - expected).abs().max() < 2e-5
    assert report.family == "siglip2" and len(report.notes) == 3


def test_patch_kernel_resize_is_exact_for_resized_patches():
    kernel = torch.randn(5, 3, 16, 16)
    x14 = torch.randn(7, 3, 14, 14)
    expected = torch.einsum("ncyx,dcyx->nd", upsample(x14, 16).double(), kernel.double())
    got = torch.einsum("ncyx,dcyx->nd", x14.double(), resize_patch_kernel(kernel, 14).double())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_refusals_name_the_problem(tmp_path):
    hf = SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=16, **TINY))
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="resize_patches=True"):
        load_siglip_vision(tmp_path, resize_patches=False)
    with pytest.raises(ValueError, match=r"mis-shaped .*patch_embedding.weight: \(32, 3, 14, 14\) != \(48, "):
        load_siglip_vision(tmp_path, tower=navit_siglip(48, 2, 2, 64))
    with pytest.raises(ValueError, match=r"missing \['encoder.layers.2"):
        load_siglip_vision(tmp_path, tower=navit_siglip(32, 3, 2, 64))
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model.bin.*never unpickles"):
        load_siglip_vision(tmp_path)


def test_extra_vision_tensor_is_reported_as_unexpected(tmp_path):
    hf = SiglipVisionModel(SiglipVisionConfig(image_size=28, patch_size=14, **TINY))
    hf.save_pretrained(tmp_path)
    save_file({**hf.state_dict(), "encoder.extra.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected \['encoder.extra.weight'\]"):
        load_siglip_vision(tmp_path)


def test_other_models_and_activations_are_refused(tmp_path):
    SiglipVisionConfig(hidden_act="gelu", **TINY).save_pretrained(tmp_path / "gelu")
    with pytest.raises(ValueError, match=r"got \('gelu', 1e-06, 3\)"):
        load_siglip_vision(tmp_path / "gelu")
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(ValueError, match="model_type 'vit' is not one of"):
        load_siglip_vision(tmp_path / "vit")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_siglip_vision(tmp_path / "nothing")
