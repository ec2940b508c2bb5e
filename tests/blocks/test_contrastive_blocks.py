"""SigLIP's sigmoid loss and text tower."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from blocks.contrastive import SigmoidContrastiveLoss, siglip_text_encoder_tiny


def test_sigmoid_loss_matches_the_pairwise_formula():
    loss = SigmoidContrastiveLoss(init_scale=3.0, init_bias=-2.0)
    image, text = torch.randn(5, 8), torch.randn(5, 8)
    logits = loss.logits(image, text)
    cosine = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    assert torch.allclose(logits, 3.0 * cosine - 2.0, atol=1e-6)
    expected = -sum(math.log(torch.sigmoid((1 if i == j else -1) * logits[i, j]).item())
                    for i in range(5) for j in range(5)) / 5
    assert loss(logits).item() == pytest.approx(expected, rel=1e-5)


def test_sigmoid_loss_prefers_matched_pairs():
    loss = SigmoidContrastiveLoss()
    image = torch.randn(6, 16)
    matched = loss(loss.logits(image, image + 0.01 * torch.randn(6, 16)))
    shuffled = loss(loss.logits(image, image.roll(1, 0)))
    assert matched < shuffled - 5


def test_sigmoid_loss_counts_every_marked_match_as_positive():
    loss = SigmoidContrastiveLoss(init_scale=3.0, init_bias=-2.0)
    logits = loss.logits(torch.randn(4, 8), torch.randn(4, 8))
    matches = torch.eye(4, dtype=torch.bool)
    matches[0, 2] = matches[2, 0] = True  # images 0 and 2 share a caption
    expected = -sum(math.log(torch.sigmoid((1 if matches[i, j] else -1) * logits[i, j]).item())
                    for i in range(4) for j in range(4)) / 4
    assert loss(logits, matches).item() == pytest.approx(expected, rel=1e-5)
    assert loss(logits, matches).item() != pytest.approx(loss(logits).item(), rel=1e-3)


def test_text_tower_pools_the_last_real_token_and_ignores_padding():
    tower = siglip_text_encoder_tiny(vocab_size=50, embed_dim=8).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = tower(ids, mask)
    assert out.shape == (2, 8)
    alone = tower(ids[:1, :3], mask[:1, :3])
    assert torch.allclose(out[0], alone[0], atol=1e-5)  # padding changes nothing
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_text_tower_refuses_long_or_empty_texts():
    tower = siglip_text_encoder_tiny(vocab_size=50)
    with pytest.raises(ValueError, match="max_length 64"):
        tower(torch.zeros(1, 65, dtype=torch.long), torch.ones(1, 65, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one token"):
        tower(torch.zeros(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))
