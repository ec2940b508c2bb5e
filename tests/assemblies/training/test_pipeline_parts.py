"""Pipeline parts: capacity check, compute threads, safetensors weights in/out, sweep summary."""

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


def test_sweep_summary_table_and_plot(tmp_path):
    for job, (resampler, seed, acc) in enumerate([("resampler3d", 0, 0.9), ("mlp", 0, 0.5), ("mlp", 1, 0.7)]):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps({
            "val/acc": acc, "tokens_per_sample": 80.0, "tokens_per_s": 1000.0, "peak_memory_mb": 500.0,
            "overrides": ["+assembly=mcpv45", "scale=tiny", f"resampler={resampler}", f"seed={seed}"]}))
    table, plot = summarise(tmp_path)
    assert "| resampler=mlp seed=1 | 0.700 | 80 | 1000 | 500 |" in table
    assert plot.is_file() and plot.stat().st_size > 5000
    assert (tmp_path / "summary.md").read_text().count("\n") == 5
