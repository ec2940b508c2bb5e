"""NaViT SigLIP: parity with the official tower's golden vectors, packed == padded, checkpointing."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from blocks.positions import sincos_2d
from blocks.vision import (
    navit_position_ids,
    navit_siglip,
    navit_siglip_so400m,
    navit_siglip_tiny,
)

PATCH = 14
GOLDEN_TOLERANCE = 4e-6  # the README's parity bound, fp32 against the official tower


def patchify(image: torch.Tensor) -> torch.Tensor:
    """Float CHW image [3, 14h, 14w] -> packed patch rows [h*w, 588] in (c, y, x) order."""
    _, height, width = image.shape
    h, w = height // PATCH, width // PATCH
    return image.reshape(3, h, PATCH, w, PATCH).permute(1, 3, 0, 2, 4).reshape(h * w, 3 * PATCH * PATCH)


def normalise(u8_hwc: torch.Tensor) -> torch.Tensor:
    """uint8 HWC -> float32 CHW with the processor's (u/255 - 0.5)/0.5."""
    return ((u8_hwc.float() / 255 - 0.5) / 0.5).permute(2, 0, 1)


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_file(str(golden_dir / "blocks" / "vision.safetensors"))


def golden_tower(golden: dict, attn_backend: str):
    tower = navit_siglip(48, 2, 2, 96, attn_backend=attn_backend).eval()
    weights = {k: v for k, v in golden.items() if k.startswith(("embeddings.", "encoder.", "post_layernorm."))}
    tower.load_state_dict(weights, strict=True)
    return tower


def golden_inputs(golden: dict) -> tuple[torch.Tensor, torch.Tensor]:
    tgt_sizes = golden["tgt_sizes"].long()
    patches = torch.cat([patchify(normalise(golden[f"image_{i}"])) for i in range(len(tgt_sizes))])
    return patches, tgt_sizes


def unpad(padded: torch.Tensor, tgt_sizes: torch.Tensor) -> torch.Tensor:
    return torch.cat([padded[i, :h * w] for i, (h, w) in enumerate(tgt_sizes.tolist())])


def test_processor_layout_converts_to_the_same_patches(golden):
    pixel_values = golden["pixel_values_2"]  # [3, 14, n*14], official reshape_by_patch layout
    n = pixel_values.shape[-1] // PATCH
    converted = pixel_values.view(3, PATCH, n, PATCH).permute(2, 0, 1, 3).reshape(n, 3 * PATCH * PATCH)
    assert torch.equal(converted, patchify(normalise(golden["image_2"])))


def test_patches_are_what_the_official_tower_was_fed(golden, golden_dir):
    """Rebuild the official padded input from our patch rows and match its recorded sha256."""
    patches, tgt_sizes = golden_inputs(golden)
    per_image = [p.view(-1, 3, PATCH, PATCH).permute(1, 2, 0, 3).reshape(3 * PATCH, -1)  # [42, n*14]
                 for p in patches.split((tgt_sizes[:, 0] * tgt_sizes[:, 1]).tolist())]
    padded = torch.nn.utils.rnn.pad_sequence([p.T for p in per_image], batch_first=True)  # [B, Lmax, 42]
    padded = padded.permute(0, 2, 1).reshape(len(per_image), 3, PATCH, -1)
    recorded = json.loads((golden_dir / "blocks" / "vision.json").read_text())["inputs"]["pixel_values_padded"]
    assert list(padded.shape) == recorded["shape"]
    assert hashlib.sha256(padded.contiguous().numpy().tobytes()).hexdigest() == recorded["sha256"]


def test_position_ids_equal_official(golden):
    tgt_sizes = golden["tgt_sizes"].long()
    assert torch.equal(navit_position_ids(tgt_sizes), unpad(golden["position_ids"], tgt_sizes))


def test_position_ids_stretch_every_slice_over_the_grid():
    assert torch.equal(navit_position_ids(torch.tensor([[70, 70]])), torch.arange(4900))
    for n in (1, 7, 35, 69, 71, 140):
        ids = navit_position_ids(torch.tensor([[n, 1]]))
        rows = ids // 70
        assert rows[0] == 0 and (rows.diff() >= 0).all() and rows[-1] >= 69 * (n - 1) // n
    # 2x2 patches take the grid rows/cols 0 and 35: 35/70 sits exactly on a float32 boundary
    assert navit_position_ids(torch.tensor([[2, 2]])).tolist() == [0, 35, 35 * 70, 35 * 70 + 35]


@pytest.mark.parametrize("attn_backend", ["sdpa", "eager"])
def test_last_hidden_state_matches_official(golden, attn_backend):
    tower = golden_tower(golden, attn_backend)
    patches, tgt_sizes = golden_inputs(golden)
    expected = unpad(golden["last_hidden_state"], tgt_sizes)
    with torch.no_grad():
        packed = tower(patches, tgt_sizes)
        padded = tower.forward_padded(patches, tgt_sizes)
    assert packed.shape == (1024 + 600 + 70, 48)
    assert (packed - expected).abs().max() <= GOLDEN_TOLERANCE
    assert (padded - expected).abs().max() <= GOLDEN_TOLERANCE


def random_batch(sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    tgt_sizes = torch.tensor(sizes)
    return torch.randn(int((tgt_sizes[:, 0] * tgt_sizes[:, 1]).sum()), 3 * PATCH * PATCH), tgt_sizes


def test_packed_equals_padded_and_slices_are_independent():
    tower = navit_siglip_tiny(attn_backend="sdpa").eval()
    patches, tgt_sizes = random_batch([(6, 6), (3, 5), (6, 6), (2, 7), (1, 1)])
    with torch.no_grad():
        packed = tower(patches, tgt_sizes)
        padded = tower.forward_padded(patches, tgt_sizes)
        alone = tower(patches[36:51], tgt_sizes[1:2])  # the 3x5 slice on its own
    assert packed.shape == (36 + 15 + 36 + 14 + 1, 64)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[36:51], alone, atol=1e-5, rtol=1e-5)
    assert (packed[:36] - packed[51:87]).abs().max() > 1e-2  # same size, different content


def test_gradient_checkpointing_gives_the_same_grads(monkeypatch):
    tower = navit_siglip_tiny(attn_backend="sdpa").train()
    patches, tgt_sizes = random_batch([(4, 4), (2, 3)])

    def grads() -> dict[str, torch.Tensor]:
        tower.zero_grad()
        tower(patches, tgt_sizes).square().mean().backward()
        return {name: p.grad.clone() for name, p in tower.named_parameters()}

    calls = []
    layer = tower.encoder.layers[0]
    forward = layer.forward
    monkeypatch.setattr(layer, "forward", lambda *args: calls.append(1) or forward(*args))
    plain = grads()
    tower.set_grad_checkpointing(True)
    recomputed = grads()
    assert len(calls) == 3  # once without checkpointing; forward + recompute in backward with it
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    assert plain["encoder.layers.0.self_attn.q_proj.weight"].abs().sum() > 0


def test_slot_surface_and_full_size_parameter_count():
    with torch.device("meta"):
        tower = navit_siglip_so400m()
    assert sum(p.numel() for p in tower.parameters()) == 417_792_240
    assert (tower.width, tower.patch_size, len(tower.encoder.layers)) == (1152, 14, 27)
    assert tower.embeddings.position_embedding.weight.shape == (4900, 1152)
    assert all(isinstance(layer, tower.layer_classes) for layer in tower.encoder.layers)


def test_random_init_is_siglips_own():
    torch.manual_seed(0)
    tower = navit_siglip(128, 2, 4, 256)
    patch, position = tower.embeddings.patch_embedding, tower.embeddings.position_embedding
    sigma = (3 * 14 * 14) ** -0.5
    assert patch.weight.std().item() == pytest.approx(sigma, rel=0.05)
    assert patch.weight.abs().max().item() <= 2 * sigma / 0.8796 + 1e-6  # truncated at 2 sigma
    assert position.weight.std().item() == pytest.approx(128 ** -0.5, rel=0.05)  # not nn.Embedding's N(0, 1)
    layer = tower.encoder.layers[0]
    bound = (6 / (128 + 128)) ** 0.5  # xavier-uniform of a square projection
    assert layer.self_attn.q_proj.weight.abs().max().item() <= bound
    assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    assert not layer.self_attn.q_proj.bias.any() and not patch.bias.any()
    assert 0 < layer.mlp.fc1.bias.abs().max().item() < 1e-5


def test_sincos_position_init_is_the_2d_sincos_grid_as_large_as_a_patch():
    tower = navit_siglip(64, 1, 2, 128, position_init="sincos")
    table = tower.embeddings.position_embedding.weight
    assert torch.equal(table, sincos_2d(70, 70, 64).reshape(4900, 64))
    assert 0.6 < table.pow(2).mean().sqrt().item() < 0.8  # rms of sin/cos; SigLIP's normal init: 0.125
    assert torch.equal(table, navit_siglip(64, 1, 2, 128, position_init="sincos").embeddings.position_embedding.weight)
    with pytest.raises(ValueError, match="position_init must be one of"):
        navit_siglip(64, 1, 2, 128, position_init="learned")


def test_bad_input_is_refused_with_the_reason():
    tower = navit_siglip_tiny()
    patches, tgt_sizes = random_batch([(2, 2)])
    with pytest.raises(ValueError, match="describe 4 patches but patches has 3 rows"):
        tower(patches[:3], tgt_sizes)
    with pytest.raises(ValueError, match=r"patches must be \[N, 588\]"):
        tower(patches[:, :100], tgt_sizes)
    empty = tower(torch.zeros(0, 588), torch.zeros(0, 2, dtype=torch.long))
    assert empty.shape == (0, 64)
