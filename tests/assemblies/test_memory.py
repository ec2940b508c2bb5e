"""assemblies/memory.py against what it estimates: the tensors a built model and one AdamW step hold,
the parameters ``freeze`` makes trainable, and the official checkpoint's size."""

from __future__ import annotations

import json

import pytest
import torch

from assemblies.contrastive import ContrastivePretrainer
from assemblies.benchmarks.measure import LiveTensorBytes
from assemblies.benchmarks.train_step import _batch
from assemblies.memory import Stage, activation_bytes, describe_model, lora_params, stage_memory
from assemblies.presets import compose_config, mcpv45_tiny
from assemblies.training.stages import add_lora, freeze, param_groups
from blocks.data.tokenizer import tiny_tokenizer


def _one_adamw_step(model: torch.nn.Module, trainable: list[str]) -> torch.optim.AdamW:
    freeze(model, trainable)
    optimizer = torch.optim.AdamW(param_groups(model, {name: 1e-3 for name in trainable}))
    sum((p.float() ** 2).sum() for p in model.parameters() if p.requires_grad).backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("trainable", [["resampler"], ["vpm", "resampler"], ["vpm", "resampler", "llm"]])
def test_fp32_estimate_equals_the_bytes_a_trained_model_holds(trainable):
    model = mcpv45_tiny()
    optimizer = _one_adamw_step(model, trainable)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    moments = sum(state[key].numel() * state[key].element_size()
                  for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq"))
    estimate = stage_memory(model, Stage("s", trainable), "32-true", [1, 4])
    assert (estimate["weights"], estimate["grads"], estimate["optimizer"]) == (weights, grads, moments)
    assert estimate["per_gpu"][4] == (weights + grads + moments) / 4


def test_lora_estimate_equals_the_adapters_peft_adds():
    model = mcpv45_tiny()
    expected = lora_params(model.llm, 4, ("q_proj", "v_proj"))
    add_lora(model, r=4, alpha=4, target_modules=("q_proj", "v_proj"))
    assert expected == sum(p.numel() for name, p in model.llm.named_parameters() if "lora_" in name) > 0


def test_tiny_recipe_in_pipeline_order_counting_the_text_tower_of_stage0():
    report = describe_model(compose_config(["+assembly=mcpv45", "scale=tiny"], "describe"))
    assert [s["name"] for s in report["stages"]] == ["stage0", "stage1", "stage2", "stage3", "sft", "sft_long_cot",
                                                     "rl_hybrid", "rlaif_dpo"]
    assert report["precision"] == "32-true"  # the tiny recipe trains in fp32 on a CPU
    # What training freezes: stage0 trains the tower, the resampler and the contrastive text tower.
    wrapper = ContrastivePretrainer(mcpv45_tiny(), vocab_size=len(tiny_tokenizer()))
    trained = freeze(wrapper, ["vpm", "resampler", "contrastive"]).trainable
    params = {name: row["total"] for name, row in report["params"].items()}
    head = trained - params["vpm"] - params["resampler"]
    assert head > 100_000
    assert report["stages"][0]["trainable_params"] == trained
    assert report["stages"][0]["weights"] == (params["total"] + head) * 4


def test_full_model_size_equals_the_official_checkpoint(reference_dir):
    report = describe_model(compose_config(["+assembly=mcpv45"], "describe"))
    index = json.loads((reference_dir / "model.safetensors.index.json").read_text())
    assert 2 * report["params"]["total"]["total"] == index["metadata"]["total_size"]  # bf16: 2 bytes each
    assert [s["name"] for s in report["stages"]] == ["stage1", "stage2", "stage3", "sft", "sft_long_cot", "rl_hybrid",
                                                     "rlaif_dpo"]
    assert report["precision"] == "bf16-mixed"


def test_rl_stages_hold_the_policy_alone_plus_their_rollouts_kv_cache():
    # No reference model and no head: the parameter terms equal SFT's; the KV cache is what sampling adds.
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", "stages.rl_hybrid.objective.chunk_prompts=4",
                          "pipeline.stages=[sft_long_cot,rl_hybrid,rlaif_dpo]"], "describe")
    report = {s["name"]: s for s in describe_model(cfg)["stages"]}
    sft, rl, dpo = report["sft_long_cot"], report["rl_hybrid"], report["rlaif_dpo"]
    assert [rl[k] for k in ("weights", "grads", "optimizer")] == [sft[k] for k in ("weights", "grads", "optimizer")]
    assert sft["rollout_kv_cache"] == 0 and dpo["rollout_kv_cache"] > 0
    llm = mcpv45_tiny().llm
    with torch.no_grad():  # the engine's cache after one forward of 3 tokens, per token
        cache = llm(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True).past_key_values
    per_token = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)) // 3
    stage = cfg.stages.rl_hybrid
    rows = 4 * stage.objective.samples_per_prompt
    assert rl["rollout_kv_cache"] == rows * (stage.max_length + max(stage.objective.max_new_tokens.values())) * per_token
    assert rl["total"] == sft["total"] + rl["rollout_kv_cache"]


def test_unmodelled_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp8' not modelled"):
        stage_memory(mcpv45_tiny(), Stage("all", ["llm"]), "fp8", [1])


def test_activation_estimate_equals_the_tensors_alive_after_a_forward():
    # A model wide enough that the per-token terms dominate (as at full size): LLM 256 wide, vision 128.
    model = mcpv45_tiny(["dims.llm_hidden=256", "dims.llm_heads=4", "dims.llm_kv_heads=2", "dims.llm_head_dim=64",
                         "dims.llm_mlp=768", "dims.vision_width=128", "dims.vision_mlp=512", "dims.queries=64"])
    batch = _batch(2, 100, (16, 16), model.resampler.tokens_per_group([(16, 16)]), model.llm.config.vocab_size)
    inputs = [v for v in vars(batch).values() if isinstance(v, torch.Tensor)]
    with LiveTensorBytes([*model.parameters(), *inputs]) as probe:
        loss = model(batch).loss
        probe.release_expired()
    estimate = activation_bytes(model, batch.input_ids.numel(), batch.patches.shape[0])
    assert probe.current == pytest.approx(estimate["total"], rel=0.1), (probe.current, estimate)
    del loss
    checkpointed = activation_bytes(model, batch.input_ids.numel(), batch.patches.shape[0], grad_checkpointing=True)
    assert checkpointed["llm"] < estimate["llm"] / 1.5 and checkpointed["lm_head"] == estimate["lm_head"]
