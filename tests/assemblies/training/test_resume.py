"""Exact resume: a stage stopped half-way and resumed ends with the same weights as one that never stopped."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from assemblies.training.pipeline import train

STAGE = ["pipeline.stages=[stage3]", "stages.stage3.max_steps=6", "stages.stage3.batch_size=2",
         "stages.stage3.init_from=none", "stages.stage3.max_tokens=200",
         "callbacks.model_checkpoint.every_n_train_steps=1",
         "pipeline.export=false"]


@pytest.mark.slow
def test_stopped_and_resumed_stage_equals_uninterrupted(fast_cfg, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(fast_cfg(*STAGE, output_dir=straight))

    # Before half-way: a resumed epoch that Lightning counted too short ended early and replayed its start.
    train(fast_cfg(*STAGE, "pipeline.stop_at_step=2", output_dir=resumed))
    assert not (resumed / "stage3" / "model.safetensors").exists()  # stopped: no final weights yet
    half = torch.load(resumed / "stage3" / "checkpoints" / "last.ckpt", weights_only=True)
    assert half["global_step"] == 2
    train(fast_cfg(*STAGE, output_dir=resumed))  # the same command again: resumes from last.ckpt

    a = load_file(straight / "stage3" / "model.safetensors")
    b = load_file(resumed / "stage3" / "model.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    # The comparison is not vacuous: the steps after the stop moved the weights away from the step-2 state.
    key = "llm.lm_head.weight"
    assert not torch.equal(half["state_dict"][f"model.{key}"], b[key])
    assert json.loads((resumed / "stage3" / "result.json").read_text())["steps"] == 6
    # Both attempts' curves are kept (a resume logs into a new folder instead of overwriting).
    rows = [len((d / "metrics.csv").read_text().splitlines()) for d in sorted((resumed / "stage3" / "csv").iterdir())]
    assert len(rows) == 2 and all(r > 1 for r in rows)


def test_finished_stage_is_reused_not_retrained(fast_cfg, tmp_path):
    first = ["stages.stage1.init_from=none", "pipeline.export=false"]  # stage0 of the recipe did not run here
    train(fast_cfg("pipeline.stages=[stage1]", *first))
    weights = tmp_path / "stage1" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    train(fast_cfg("pipeline.stages=[stage1,stage2]", *first))
    assert weights.stat().st_mtime_ns == stamp
    assert (tmp_path / "stage2" / "model.safetensors").is_file()
