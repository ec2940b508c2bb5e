"""The LLM block: exact official sizes on meta, tiny forward, local-directory loading."""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

from blocks.llm import from_pretrained_dir, layer_classes, qwen3, qwen3_8b, qwen3_tiny


def test_qwen3_8b_has_the_official_parameter_count_on_meta():
    with torch.device("meta"):
        llm = qwen3_8b()
    assert sum(p.numel() for p in llm.parameters()) == 8_189_195_264
    assert llm.model.embed_tokens.weight.shape == (151748, 4096)
    assert llm.model.layers[0].self_attn.k_proj.weight.shape == (8 * 128, 4096)
    assert llm.config.rope_parameters["rope_theta"] == 1e6


def test_parameter_count_matches_the_closed_form():
    v, d, layers, h, kv, hd, mlp = 1024, 64, 2, 4, 2, 16, 128
    per_layer = d * h * hd * 2 + d * kv * hd * 2 + 2 * hd + 3 * d * mlp + 2 * d
    expected = 2 * v * d + layers * per_layer + d
    assert sum(p.numel() for p in qwen3_tiny().parameters()) == expected
    tied = qwen3(v, d, layers, h, kv, hd, mlp, tie_word_embeddings=True)
    assert sum(p.numel() for p in tied.parameters()) == expected - v * d


def test_tiny_forward_shapes_and_causality():
    llm = qwen3_tiny().eval()
    embeds = torch.randn(2, 7, 64)
    logits = llm(inputs_embeds=embeds).logits
    assert logits.shape == (2, 7, 1024)
    changed = embeds.clone()
    changed[:, -1] += 1.0
    # A causal LM: changing the last position leaves every earlier logit unchanged.
    torch.testing.assert_close(llm(inputs_embeds=changed).logits[:, :-1], logits[:, :-1])
    assert not torch.allclose(llm(inputs_embeds=changed).logits[:, -1], logits[:, -1])


def test_rejects_heads_not_divisible_by_kv_heads():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        qwen3(64, 32, 1, 3, 2, 8, 64)


def test_from_pretrained_dir_round_trips_a_saved_model(tmp_path):
    llm = qwen3_tiny().eval()
    llm.save_pretrained(tmp_path, safe_serialization=True)
    assert not list(tmp_path.glob("*.bin"))
    loaded = from_pretrained_dir(tmp_path).eval()
    ids = torch.randint(0, 1024, (1, 5))
    torch.testing.assert_close(loaded(input_ids=ids).logits, llm(input_ids=ids).logits)


def test_from_pretrained_dir_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained_dir(tmp_path / "Qwen/Qwen3-8B")


def test_layer_classes_is_the_decoder_layer():
    assert layer_classes(qwen3_tiny()) == (Qwen3DecoderLayer,)
