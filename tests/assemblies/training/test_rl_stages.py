"""The RL stages through the pipeline: GRPO learns a reward, DPO learns its pairs, both resume exactly."""

from __future__ import annotations

import csv
import json

import lightning
import pytest
import torch
from safetensors.torch import load_file

import tests.assemblies.training.rl_helpers  # noqa: F401 -- registers the test reward
from assemblies.presets import build_model
from assemblies.training.pipeline import train

# A random tiny model, 4-8 prompts a step, two-token answers, a reward it can learn from scratch.
GRPO = ["pipeline.stages=[rl_hybrid]", "stages.rl_hybrid.init_from=none", "stages.rl_hybrid.batch_size=4",
        "~stages.rl_hybrid.data.mix", "+stages.rl_hybrid.data.mix={digits: 0.5, scenes: 0.5}",
        "~stages.rl_hybrid.objective.rewards", "+stages.rl_hybrid.objective.rewards={test_vowel_start: {}}",
        "stages.rl_hybrid.objective.samples_per_prompt=8", "stages.rl_hybrid.objective.max_new_tokens={short: 2, long: 2}",
        "stages.rl_hybrid.objective.mask_truncated=false", "stages.rl_hybrid.trainable=[llm]",
        "stages.rl_hybrid.lr={llm: 1e-2}", "pipeline.export=false", "data.heldout_size=2",
        "callbacks.model_checkpoint.every_n_train_steps=1"]
DPO = ["pipeline.stages=[rlaif_dpo]", "stages.rlaif_dpo.init_from=none", "stages.rlaif_dpo.batch_size=4",
       "stages.rlaif_dpo.objective.checker=tests.assemblies.training.rl_helpers.vowel_checker",
       "stages.rlaif_dpo.objective.prompts=6", "stages.rlaif_dpo.objective.samples_per_prompt=4",
       "stages.rlaif_dpo.objective.max_new_tokens=6", "stages.rlaif_dpo.objective.heldout_prompts=3",
       "stages.rlaif_dpo.trainable=[llm]", "stages.rlaif_dpo.lr={llm: 1e-3}", "pipeline.export=false",
       "data.heldout_size=2", "callbacks.model_checkpoint.every_n_train_steps=1"]


def logged(stage_dir, key: str) -> list[float]:
    rows = [row for path in sorted(stage_dir.glob("csv/*/metrics.csv")) for row in csv.DictReader(path.open())]
    return [float(row[key]) for row in rows if row.get(key) not in (None, "")]


@pytest.mark.slow
def test_grpo_stage_raises_its_reward_and_logs_per_mode(fast_cfg, tmp_path):
    train(fast_cfg(*GRPO, "stages.rl_hybrid.max_steps=12", "stages.rl_hybrid.batch_size=8"))
    stage = tmp_path / "rl_hybrid"
    rewards = logged(stage, "train/reward")
    assert len(rewards) == 12 and sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15
    for key in ("reward/test_vowel_start/short", "reward/test_vowel_start/long", "rollout/length/long",
                "rollout/zero_variance_fraction", "rollout/truncated_ratio", "policy/clip_fraction_high",
                "policy/entropy", "rollout/generated_tokens"):
        assert logged(stage, key), key
    assert logged(stage, "rollout/generated_tokens_total")[-1] == sum(logged(stage, "rollout/generated_tokens"))
    assert json.loads((stage / "result.json").read_text())["steps"] == 12


@pytest.mark.slow
def test_rl_stage_stopped_and_resumed_equals_uninterrupted(fast_cfg, tmp_path):
    # Two updates per rollout batch: the resumed stage restarts at the right prompt batch, and its
    # rollouts draw the same samples (the engine's seeds follow the step).
    common = [*GRPO, "stages.rl_hybrid.max_steps=4", "stages.rl_hybrid.objective.updates_per_batch=2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(fast_cfg(*common, output_dir=straight))
    train(fast_cfg(*common, "pipeline.stop_at_step=2", output_dir=resumed))
    half = torch.load(resumed / "rl_hybrid" / "checkpoints" / "last.ckpt", weights_only=True)
    assert half["global_step"] == 4 and not (resumed / "rl_hybrid" / "model.safetensors").exists()
    train(fast_cfg(*common, output_dir=resumed))
    a = load_file(straight / "rl_hybrid" / "model.safetensors")
    b = load_file(resumed / "rl_hybrid" / "model.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not torch.equal(half["state_dict"]["model.llm.lm_head.weight"], b["llm.lm_head.weight"])
    assert logged(straight / "rl_hybrid", "rollout/generated_tokens") == logged(resumed / "rl_hybrid",
                                                                                "rollout/generated_tokens")


@pytest.mark.slow
def test_dpo_stage_learns_its_pairs_reports_contradictions_and_resumes(fast_cfg, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(fast_cfg(*DPO, "stages.rlaif_dpo.max_steps=6", output_dir=straight))
    stage = straight / "rlaif_dpo"
    result = json.loads((stage / "result.json").read_text())
    assert result["preferences"]["pairs"] > 0 and result["preferences"]["responses"] == 24
    for when in ("heldout_before", "heldout_after"):
        assert 0 <= result[when]["contradiction_rate"] <= 1 and result[when]["responses"] == 3
    margins = logged(stage, "dpo/margin")
    assert margins[0] == pytest.approx(0.0, abs=1e-5) and margins[-1] > 0.05  # the policy starts as the reference
    train(fast_cfg(*DPO, "stages.rlaif_dpo.max_steps=6", "pipeline.stop_at_step=3", output_dir=resumed))
    pairs = (resumed / "rlaif_dpo" / "preferences.json").read_text()
    train(fast_cfg(*DPO, "stages.rlaif_dpo.max_steps=6", output_dir=resumed))
    assert (resumed / "rlaif_dpo" / "preferences.json").read_text() == pairs == (stage / "preferences.json").read_text()
    a, b = load_file(stage / "model.safetensors"), load_file(resumed / "rlaif_dpo" / "model.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.slow
def test_rl_stage_with_lora_trains_the_adapters_and_saves_official_keys(fast_cfg, tmp_path):
    cfg = fast_cfg(*GRPO, "stages.rl_hybrid.max_steps=3", "stages.rl_hybrid.trainable=[resampler]",
                   "stages.rl_hybrid.lr={resampler: 1e-3, llm: 1e-2}")
    # set after composing: a command-line dict cannot merge into the structured config's None
    cfg.stages.rl_hybrid.lora = {"r": 4, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    lightning.seed_everything(int(cfg.seed))
    start = build_model(cfg).state_dict()  # the pipeline builds the same initial weights
    train(cfg)
    weights = load_file(tmp_path / "rl_hybrid" / "model.safetensors")
    assert set(weights) == set(start)  # adapters merged: the official keys only
    layer = "llm.model.layers.0.self_attn"
    assert not torch.equal(weights[f"{layer}.q_proj.weight"], start[f"{layer}.q_proj.weight"])
    assert torch.equal(weights[f"{layer}.k_proj.weight"], start[f"{layer}.k_proj.weight"])  # not adapted
    assert torch.equal(weights["vpm.embeddings.patch_embedding.weight"], start["vpm.embeddings.patch_embedding.weight"])


def test_the_control_experiment_copies_the_rl_stage_settings_into_the_run_config(tmp_path):
    import yaml

    from assemblies.presets import compose_config
    from assemblies.training.config import run_config_yaml

    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", "+experiment=rl_control", f"paths.output_dir={tmp_path}",
                          "stages.sft_control.init_from=/somewhere", "stages.rl_hybrid.max_steps=7"])
    stages = yaml.safe_load(run_config_yaml(cfg))["stages"]
    assert list(stages) == ["sft_control"]  # rl_hybrid is not run, yet its settings are the control's
    assert stages["sft_control"]["max_steps"] == 7 and stages["sft_control"]["lr"] == dict(cfg.stages.rl_hybrid.lr)
