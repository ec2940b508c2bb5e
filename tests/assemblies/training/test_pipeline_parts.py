"""Pipeline parts: capacity check, compute threads, safetensors weights in/out, sweep summary, reports."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from assemblies.presets import compose_config, mcpv45_tiny
from assemblies.training.config import pipeline_stages
from assemblies.training.pipeline import check_capacity, compute_threads
from assemblies.training.sweep import summarise
from assemblies.training.weights import load_weights, save_weights


def test_full_scale_on_this_machine_stops_at_once_saying_what_it_needs(monkeypatch):
    cfg = compose_config(["+assembly=mcpv45"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"8,695,895,280 parameters.*GiB.*trainer=fsdp"):
        check_capacity(cfg.model, cfg.trainer, pipeline_stages(cfg))


def test_compute_threads_leave_a_core_per_data_worker_and_are_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with compute_threads(None, data_workers=1) as threads:
            assert threads == torch.get_num_threads() == 3
        with compute_threads(None, data_workers=8) as threads:
            assert threads == 1
        with compute_threads(2, data_workers=1) as threads:  # an explicit count wins
            assert threads == 2
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_weights_round_trip_and_component_prefixes(tmp_path):
    torch.manual_seed(0)
    source, target = mcpv45_tiny(), mcpv45_tiny()
    path = save_weights(source, tmp_path / "model.safetensors")
    assert load_weights(target, path) == []
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    # An HF-style LLM directory (keys without the `llm.` prefix) loads under the llm block.
    llm_dir = tmp_path / "llm"
    llm_dir.mkdir()
    save_file({k: v.contiguous() + 1 for k, v in source.llm.state_dict().items()}, str(llm_dir / "model.safetensors"))
    load_weights(target, {"llm": llm_dir})
    assert torch.equal(target.llm.lm_head.weight, source.llm.lm_head.weight + 1)


def test_weights_that_do_not_fit_are_refused_with_names(tmp_path):
    model = mcpv45_tiny()
    save_file({"resampler.query": torch.zeros(3, 3), "nope.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(KeyError, match=r"unexpected key 'nope.weight'.*shape"):
        load_weights(model, tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="no safetensors"):
        load_weights(model, tmp_path / "missing")


def test_sweep_summary_compares_accuracy_with_chance_samples_per_s_wall_time_and_memory(tmp_path):
    for job, (resampler, seed, acc) in enumerate([("resampler3d", 0, 0.9), ("mlp", 0, 0.5), ("mlp", 1, 0.7)]):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps({
            "figures_from": "stage3", "wall_seconds": 52.0 + job, "samples_per_s": 40.0, "tokens_per_sample": 80.0,
            "peak_memory_mb": 500.0, "peak_memory_stage": "stage3", "peak_memory_method": "process RSS sampled",
            "gen/short/acc": acc, "gen/long/acc": 0.1, "val/acc": acc, "gen/short/digit/acc": acc,
            "val/digit/acc": 0.2, "chance/digit": 0.1, "val/scene_count/acc": 0.3, "chance/scene_count": 1 / 6,
            "overrides": ["+assembly=mcpv45", "scale=tiny", f"resampler={resampler}", f"seed={seed}"]}))
    table, plot = summarise(tmp_path)
    header = table.splitlines()[0]
    assert "samples/s" in header and "wall s" in header and "peak in" in header and "| tok/s |" not in header
    assert header.endswith("| digit (chance 0.10) | scene_count (chance 0.17) |")
    # The digit column is the generated answers' accuracy; scene_count only has the teacher-forced one.
    assert "| resampler=mlp seed=1 | stage3 | 54 | 40.0 | 80 | 500 | stage3 | 0.700 | 0.100 | 0.700 | 0.700 | 0.300 |" \
        in table
    assert "each measured as process RSS sampled" in table
    assert "RL tokens" not in header  # no run has rollouts
    assert plot.is_file() and plot.stat().st_size > 5000


def test_sweep_summary_of_rl_runs_shows_their_rollout_tokens(tmp_path):
    for job, (schedule, tokens) in enumerate([("hybrid", 4000), ("long_only", 6000)]):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps({
            "figures_from": "rl_hybrid", "gen/short/acc": 0.5, "gen/long/acc": 0.4, "rollout_generated_tokens": tokens,
            "overrides": [f"stages.rl_hybrid.objective.mode_schedule={schedule}"]}))
    table, _ = summarise(tmp_path)
    assert table.splitlines()[0].endswith("| long acc | forced acc | RL tokens |")
    assert "| stages.rl_hybrid.objective.mode_schedule=long_only | rl_hybrid | - | - | - | - | - | 0.500 | 0.400 | - | 6000 |" in table
