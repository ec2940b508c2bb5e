"""Pretrained components: Hugging Face SigLIP and Qwen3 directories as a stage's ``init_from``, and the
full recipe's stage1 naming them."""

from __future__ import annotations

import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from assemblies.checkpoints.siglip import load_siglip_vision
from assemblies.presets import compose_config, mcpv45_tiny
from assemblies.training.config import pipeline_stages
from assemblies.training.pipeline import train
from assemblies.training.weights import load_weights
from blocks.data.tokenizer import tiny_tokenizer
from blocks.llm import qwen3

TARGET_TEXTS = ["How many shapes are there?", "There are 3 shapes.", "Which way does the circle move?"] * 20
SOURCE_TEXTS = ["The quick brown fox jumps over the lazy dog.", "How many foxes are there?", "shapes"] * 20


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """A SigLIP tower with 16-px patches and a 4 x 4 position table, and a Qwen3 of 400 rows with its own
    tokenizer, both the tiny preset's sizes, saved as Hugging Face saves them."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(1)
    siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                  num_attention_heads=2, patch_size=16, image_size=64))
    siglip.save_pretrained(root / "siglip")
    llm = qwen3(400, 64, 2, 4, 2, 16, 128)
    llm.save_pretrained(root / "qwen3")
    source_tokenizer = tiny_tokenizer(SOURCE_TEXTS, vocab_size=300, cache_dir=root / "cache")
    source_tokenizer.save_pretrained(root / "qwen3")
    target_tokenizer = tiny_tokenizer(TARGET_TEXTS, vocab_size=320, cache_dir=root / "cache")
    return root / "siglip", root / "qwen3", llm, source_tokenizer, target_tokenizer


def test_hf_siglip_and_qwen3_directories_load_per_block(hf_dirs):
    siglip_dir, qwen3_dir, source_llm, source_tokenizer, target_tokenizer = hf_dirs
    model = mcpv45_tiny()
    resampler = {k: v.clone() for k, v in model.resampler.state_dict().items()}
    missing = load_weights(model, {"vpm": siglip_dir, "llm": qwen3_dir}, tokenizer=target_tokenizer)
    assert missing == []

    tower, _ = load_siglip_vision(siglip_dir)  # 16-px kernel -> 14 px, 4 x 4 positions -> 70 x 70
    assert model.vpm.embeddings.position_embedding.weight.shape[0] == 70 * 70
    for name, tensor in tower.state_dict().items():
        assert torch.equal(model.vpm.state_dict()[name], tensor), name
    for name, tensor in model.resampler.state_dict().items():
        assert torch.equal(tensor, resampler[name]), name  # not named: untouched

    source = source_llm.state_dict()
    for name, tensor in model.llm.state_dict().items():
        if "embed_tokens" not in name and "lm_head" not in name:
            assert torch.equal(tensor, source[name]), name
    source_vocab, target_vocab = source_tokenizer.get_vocab(), target_tokenizer.get_vocab()
    shared = sorted(set(source_vocab) & set(target_vocab))
    new = sorted(set(target_vocab) - set(source_vocab))
    assert any(source_vocab[t] != target_vocab[t] for t in shared) and new  # ids differ: matched by string
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        ours, theirs = model.llm.state_dict()[key], source[key]
        assert ours.shape == (1024, 64) and theirs.shape == (400, 64)
        for token in shared:
            assert torch.equal(ours[target_vocab[token]], theirs[source_vocab[token]]), token
        mean = theirs[:len(source_tokenizer)].double().mean(0).float()
        for token in new:
            torch.testing.assert_close(ours[target_vocab[token]], mean)
        assert torch.equal(ours[350], theirs[350]) and torch.allclose(ours[1000], mean)  # padding rows: by id


def test_a_tower_directory_under_the_wrong_block_is_refused(hf_dirs):
    siglip_dir, qwen3_dir, *_ = hf_dirs
    with pytest.raises(ValueError, match="initialises vpm, not llm"):
        load_weights(mcpv45_tiny(), {"llm": siglip_dir})
    with pytest.raises(ValueError, match="holds a TimmViT, not navit_siglip"):
        load_weights(mcpv45_tiny(["vision=timm_vit"]), {"vpm": siglip_dir})


def test_the_full_recipe_starts_from_the_named_directories(tmp_path):
    cfg = compose_config(["+assembly=mcpv45", f"paths.siglip_dir={tmp_path}", f"paths.qwen3_dir={tmp_path}"])
    assert dict(pipeline_stages(cfg)[0].init_from) == {"vpm": str(tmp_path), "llm": str(tmp_path)}
    assert cfg.stages.stage2.init_from == "previous"


def test_a_missing_directory_stops_the_run_with_what_to_set(tmp_path):
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", f"paths.output_dir={tmp_path}",
                          "paths.qwen3_dir=/no/such/dir", "pipeline.stages=[stage1]",
                          "stages.stage1.init_from={vpm: '${paths.siglip_dir}', llm: '${paths.qwen3_dir}'}"])
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    message = str(stopped.value)
    assert "set paths.siglip_dir=<dir>: a Hugging Face SigLIP" in message
    assert "paths.qwen3_dir=/no/such/dir does not exist" in message
    assert "tokenizer_dir" not in message  # the tiny recipe trains its own tokenizer
    assert not (tmp_path / "stage1").exists()
