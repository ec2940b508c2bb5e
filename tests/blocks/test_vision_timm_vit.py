"""timm ViT in the vision slot: packed rows in, per-patch features out, same as timm on each image."""

from __future__ import annotations

import pytest
import torch

from blocks.vision import timm_vit, timm_vit_tiny

PATCH = 14


def patchify(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, 14h, 14w] -> packed patch rows [B*h*w, 588] in (c, y, x) order."""
    b, _, height, width = images.shape
    h, w = height // PATCH, width // PATCH
    return images.reshape(b, 3, h, PATCH, w, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b * h * w, -1)


def test_each_slice_equals_timm_on_its_image():
    vit = timm_vit_tiny().eval()
    big, small = torch.randn(2, 3, 4 * PATCH, 6 * PATCH), torch.randn(1, 3, 3 * PATCH, 2 * PATCH)
    # interleaved sizes: the bucketing must put every row back where it came from
    patches = torch.cat([patchify(big[:1]), patchify(small), patchify(big[1:])])
    tgt_sizes = torch.tensor([[4, 6], [3, 2], [4, 6]])
    with torch.no_grad():
        out = vit(patches, tgt_sizes)
        expected_big = vit.model.forward_features(big)[:, 1:]  # drop the class token
        expected_small = vit.model.forward_features(small)[:, 1:]
    assert out.shape == (24 + 6 + 24, 64)
    torch.testing.assert_close(out[:24], expected_big[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[24:30], expected_small[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[30:], expected_big[1], atol=1e-5, rtol=1e-5)


def test_slot_surface_backends_and_checkpointing():
    vit = timm_vit_tiny(attn_backend="sdpa")
    assert (vit.width, vit.patch_size) == (64, 14)
    assert all(isinstance(block, vit.layer_classes) for block in vit.model.blocks)
    eager = timm_vit_tiny(attn_backend="eager")
    eager.load_state_dict(vit.state_dict())
    patches, tgt_sizes = torch.randn(6 + 4, 588), torch.tensor([[2, 3], [1, 4]])
    with torch.no_grad():
        torch.testing.assert_close(eager.eval()(patches, tgt_sizes), vit.eval()(patches, tgt_sizes),
                                   atol=1e-5, rtol=1e-5)

    vit.train()
    vit(patches, tgt_sizes).sum().backward()
    plain = vit.model.blocks[0].attn.qkv.weight.grad.clone()
    vit.zero_grad()
    vit.set_grad_checkpointing(True)
    vit(patches, tgt_sizes).sum().backward()
    torch.testing.assert_close(vit.model.blocks[0].attn.qkv.weight.grad, plain, atol=1e-6, rtol=1e-5)


def test_other_architectures_and_refusals():
    vit = timm_vit("vit_small_patch16_224", embed_dim=32, depth=1, num_heads=2, reg_tokens=2)
    assert vit.model.num_prefix_tokens == 3  # class + 2 registers, all dropped
    assert vit(torch.randn(5, 588), torch.tensor([[1, 5]])).shape == (5, 32)
    with pytest.raises(ValueError, match="xformers"):
        timm_vit_tiny(attn_backend="xformers")
    with pytest.raises(ValueError, match="describe 6 patches"):
        timm_vit_tiny()(torch.randn(5, 588), torch.tensor([[2, 3]]))
