"""Official checkpoint layout: exact key set/shapes/config of MiniCPM-V 4.5, tiny round trips, strict errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from assemblies.checkpoints.official import (build_from_official_config, export_index, export_official,
                                             load_official, official_config, parameters_on_meta, shard_plan)
from assemblies.checkpoints.qwen3 import load_qwen3_llm
from assemblies.presets import mcpv45, mcpv45_tiny
from blocks.batch import collate
from blocks.llm import qwen3, qwen3_tiny

from mllm_helpers import make_sample


def shapes_implied_by(config: dict) -> dict[str, tuple[int, ...]]:
    """Every official tensor's shape, written out from config.json alone (independent of our builders)."""
    v, d = config["vision_config"], config["hidden_size"]
    w, mlp, p, grid = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["image_size"] // v["patch_size"]
    hd, heads, kv, ff, vocab = (config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"],
                                config["intermediate_size"], config["vocab_size"])
    shapes = {"vpm.embeddings.patch_embedding.weight": (w, 3, p, p), "vpm.embeddings.patch_embedding.bias": (w,),
              "vpm.embeddings.position_embedding.weight": (grid * grid, w),
              "vpm.post_layernorm.weight": (w,), "vpm.post_layernorm.bias": (w,),
              "resampler.query": (config["query_num"], d), "resampler.proj": (d, d), "resampler.kv_proj.weight": (d, w),
              "resampler.attn.in_proj_weight": (3 * d, d), "resampler.attn.in_proj_bias": (3 * d,),
              "resampler.attn.out_proj.weight": (d, d), "resampler.attn.out_proj.bias": (d,),
              "llm.model.embed_tokens.weight": (vocab, d), "llm.model.norm.weight": (d,), "llm.lm_head.weight": (vocab, d)}
    for ln in ("ln_q", "ln_kv", "ln_post"):
        shapes |= {f"resampler.{ln}.weight": (d,), f"resampler.{ln}.bias": (d,)}
    for i in range(v["num_hidden_layers"]):
        pre = f"vpm.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= {pre + f"self_attn.{proj}.weight": (w, w), pre + f"self_attn.{proj}.bias": (w,)}
        shapes |= {pre + "mlp.fc1.weight": (mlp, w), pre + "mlp.fc1.bias": (mlp,), pre + "mlp.fc2.weight": (w, mlp),
                   pre + "mlp.fc2.bias": (w,)}
        for ln in ("layer_norm1", "layer_norm2"):
            shapes |= {pre + f"{ln}.weight": (w,), pre + f"{ln}.bias": (w,)}
    for i in range(config["num_hidden_layers"]):
        pre = f"llm.model.layers.{i}."
        shapes |= {pre + "self_attn.q_proj.weight": (heads * hd, d), pre + "self_attn.k_proj.weight": (kv * hd, d),
                   pre + "self_attn.v_proj.weight": (kv * hd, d), pre + "self_attn.o_proj.weight": (d, heads * hd),
                   pre + "self_attn.q_norm.weight": (hd,), pre + "self_attn.k_norm.weight": (hd,),
                   pre + "mlp.gate_proj.weight": (ff, d), pre + "mlp.up_proj.weight": (ff, d),
                   pre + "mlp.down_proj.weight": (d, ff), pre + "input_layernorm.weight": (d,),
                   pre + "post_attention_layernorm.weight": (d,)}
    return shapes


@pytest.fixture(scope="module")
def full_model():
    return mcpv45()  # on meta: shapes only


def test_full_export_layout_equals_the_official_index(reference_dir, full_model):
    reference = json.loads((reference_dir / "model.safetensors.index.json").read_text())
    config = json.loads((reference_dir / "config.json").read_text())
    index = export_index(full_model, dtype=torch.bfloat16)
    assert set(index["weight_map"]) == set(reference["weight_map"])
    assert index["metadata"]["total_size"] == reference["metadata"]["total_size"] == 17_391_790_560
    plan = shard_plan(full_model, torch.bfloat16)
    exported_shapes = {name: shape for shard in plan for name, shape in shard.items()}
    assert exported_shapes == shapes_implied_by(config)
    assert len(plan) == 4 and set(index["weight_map"].values()) == {f"model-0000{i}-of-00004.safetensors"
                                                                     for i in range(1, 5)}
    assert next(full_model.parameters()).is_meta  # nothing was materialised


def test_config_writer_reproduces_the_official_fields(reference_dir, full_model):
    reference = json.loads((reference_dir / "config.json").read_text())
    ours = official_config(full_model)
    assert set(ours) == set(reference)
    differing = {k for k in reference if ours[k] != reference[k]}
    # We write the version that produced the export, and auto_map names the official repository's code.
    assert differing == {"transformers_version", "auto_map"}


def test_building_from_the_official_config_gives_the_preset(reference_dir, full_model):
    config = json.loads((reference_dir / "config.json").read_text())
    with torch.device("meta"):
        built = build_from_official_config(config)
    assert built.num_params() == full_model.num_params()
    assert {k: t.shape for k, t in built.state_dict().items()} == {k: t.shape for k, t in full_model.state_dict().items()}
    assert official_config(built) == official_config(full_model)


def test_full_size_loading_allocates_only_buffers(reference_dir):
    config = json.loads((reference_dir / "config.json").read_text())
    with parameters_on_meta():  # what load_official builds before the checkpoint replaces the parameters
        model = build_from_official_config(config)
    assert all(p.is_meta for p in model.parameters())
    inv_freq = model.llm.model.rotary_emb.inv_freq  # not in any checkpoint: must be computed for real
    assert not inv_freq.is_meta
    torch.testing.assert_close(inv_freq, 1e6 ** -(torch.arange(0, 128, 2).float() / 128))


@pytest.mark.parametrize("overrides", [[], ["model.resampler.positions_in_values=true"]])
def test_tiny_round_trip_is_exact(tmp_path, overrides):
    model = mcpv45_tiny(overrides).eval()
    export_official(model, tmp_path, dtype=torch.float32, max_shard_bytes=400_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and shards == sorted(set(index["weight_map"].values()))
    assert all(re.fullmatch(rf"model-\d{{5}}-of-{len(shards):05d}\.safetensors", s) for s in shards)
    assert index["metadata"]["total_size"] == 4 * model.num_params()["total"]
    for shard in shard_plan(model, torch.float32, 400_000):  # a tensor over the cap gets a shard of its own
        assert len(shard) == 1 or sum(4 * torch.Size(s).numel() for s in shard.values()) <= 400_000
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))

    loaded = load_official(tmp_path).eval()
    original = model.state_dict()
    assert set(loaded.state_dict()) == set(original)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    batch = collate([make_sample(4, [(3, 4), (2, 2)]), make_sample(7, [(5, 1)])], pad_id=0)
    torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=0)


def test_bf16_export_and_single_file_checkpoint(tmp_path):
    model = mcpv45_tiny()
    export_official(model, tmp_path, dtype=torch.bfloat16)  # default cap: one shard
    with safe_open(tmp_path / "model-00001-of-00001.safetensors", framework="pt") as f:
        assert f.get_tensor("resampler.query").dtype == torch.bfloat16
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    # The same tensors as one model.safetensors without an index load too.
    (tmp_path / "model.safetensors.index.json").unlink()
    (tmp_path / "model-00001-of-00001.safetensors").rename(tmp_path / "model.safetensors")
    loaded = load_official(tmp_path, dtype=None)
    assert loaded.llm.lm_head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(loaded.resampler.query.float(), model.resampler.query.bfloat16().float())


def test_loading_into_an_existing_model_keeps_its_dtype(tmp_path):
    export_official(mcpv45_tiny(), tmp_path, dtype=torch.bfloat16)
    target = mcpv45_tiny()
    load_official(tmp_path, model=target)
    assert target.vpm.post_layernorm.weight.dtype == torch.float32


def test_key_and_shape_problems_are_all_listed(tmp_path):
    model = mcpv45_tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["resampler.query"]
    state["resampler.extra"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(official_config(model)))
    with pytest.raises(ValueError) as error:
        load_official(tmp_path, model=mcpv45_tiny())
    assert "missing (1): ['resampler.query']" in str(error.value)
    assert "unexpected (1): ['resampler.extra']" in str(error.value)
    with pytest.raises(ValueError, match=r"shape mismatch .*llm.model.embed_tokens.weight: checkpoint \(1024, 64\) "
                                         r"vs model \(2048, 64\)"):
        load_official(tmp_path, model=mcpv45_tiny(["dims.vocab_size=2048"]))


def test_exporting_a_meta_model_is_refused(tmp_path, full_model):
    with pytest.raises(ValueError, match="no weights \\(meta device\\)"):
        export_official(full_model, tmp_path)
    assert not list(tmp_path.iterdir())


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model.bin.*never unpickles"):
        load_official(tmp_path)


def test_blocks_without_official_layout_cannot_be_exported():
    with pytest.raises(ValueError, match="navit_siglip \\+ a perceiver resampler, not NaViTSiglip \\+ MLPProjector"):
        official_config(mcpv45_tiny(["resampler=mlp"]))


def test_qwen3_directory_loads_into_the_llm_slot(tmp_path):
    source = qwen3_tiny().eval()
    source.save_pretrained(tmp_path)
    model = mcpv45_tiny()
    load_qwen3_llm(model.llm, tmp_path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.llm.state_dict()[name], tensor), name


def test_tied_qwen3_loads_onto_meta_parameters(tmp_path):
    source = qwen3(1024, 64, 2, 4, 2, 16, 128, tie_word_embeddings=True).eval()
    source.save_pretrained(tmp_path)
    with parameters_on_meta():
        target = qwen3(1024, 64, 2, 4, 2, 16, 128, tie_word_embeddings=True)
    load_qwen3_llm(target, tmp_path)
    assert target.lm_head.weight is target.model.embed_tokens.weight
    ids = torch.randint(0, 1024, (1, 6))
    torch.testing.assert_close(target.eval()(input_ids=ids).logits, source(input_ids=ids).logits)


def test_qwen3_config_mismatch_is_named(tmp_path):
    qwen3_tiny().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'num_hidden_layers': \(2, 3\)"):
        load_qwen3_llm(qwen3(1024, 64, 3, 4, 2, 16, 128), tmp_path)
