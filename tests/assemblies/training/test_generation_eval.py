"""Generation-based held-out evaluation inside the pipeline: per stage, every K steps, without touching training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from assemblies.training.generation_eval import evaluation_settings
from assemblies.training.pipeline import train
from assemblies.training.report import read_csv_metrics

STAGE = ["pipeline.stages=[stage3]", "stages.stage3.max_steps=4", "stages.stage3.batch_size=2",
         "stages.stage3.init_from=none", "pipeline.export=false", "evaluation.per_task=2",
         "evaluation.during_per_task=1", "evaluation.max_new_tokens={short: 3, long: 5}"]


@pytest.mark.slow
def test_every_k_steps_and_at_the_end_without_changing_what_is_trained(fast_cfg, tmp_path):
    train(fast_cfg(*STAGE, "evaluation.every_n_steps=2", output_dir=tmp_path / "with"))
    train(fast_cfg(*STAGE, "evaluation.modes=[]", output_dir=tmp_path / "without"))
    stage = tmp_path / "with" / "stage3"
    rows = read_csv_metrics(stage)
    steps = sorted({int(r["step"]) for r in rows if r.get("gen/short/digit/acc")})
    assert steps == [2, 4]  # in-stage at step 2 (1 record per task), then the stage's end (2 per task)
    assert {int(r["step"]) for r in rows if r.get("gen/long/digit/acc")} == {2, 4}
    predictions = [json.loads(line) for line in (stage / "predictions.jsonl").read_text().splitlines()]
    assert sorted((p["task"], p["mode"]) for p in predictions) == [("digit", "long")] * 2 + [("digit", "short")] * 2
    result = json.loads((stage / "result.json").read_text())
    digit = result["tasks"]["digit"]
    assert set(digit) >= {"acc", "chance", "short", "long"} and digit["short"]["samples"] == 2
    assert result["eval_seconds"] > 0 and set(result["generation_acc"]) == {"short", "long"}
    assert not (tmp_path / "without" / "stage3" / "predictions.jsonl").exists()
    # Evaluating (eval mode, no grad, then back to training mode) leaves training exactly as it was.
    a, b = (load_file(tmp_path / run / "stage3" / "model.safetensors") for run in ("with", "without"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_stage_killed_while_evaluating_at_its_end_evaluates_on_rerun(fast_cfg, tmp_path):
    train(fast_cfg(*STAGE, output_dir=tmp_path))
    stage = tmp_path / "stage3"
    for name in ("result.json", "model.safetensors", "predictions.jsonl"):  # what the kill left unwritten
        (stage / name).unlink()
    train(fast_cfg(*STAGE, output_dir=tmp_path))  # resumes from last.ckpt at the stage's last step
    result = json.loads((stage / "result.json").read_text())
    assert set(result["generation_acc"]) == {"short", "long"} and (stage / "predictions.jsonl").exists()


def test_a_stage_changes_only_the_evaluation_fields_it_sets(fast_cfg, tmp_path):
    cfg = fast_cfg("stages.sft.evaluation.per_task=256", "stages.sft.evaluation.modes=[short]",
                   "evaluation.batch_size=7", output_dir=tmp_path)
    sft, stage3 = evaluation_settings(cfg, cfg.stages.sft), evaluation_settings(cfg, cfg.stages.stage3)
    assert (sft.per_task, list(sft.modes), sft.batch_size) == (256, ["short"], 7)
    assert (stage3.per_task, list(stage3.modes)) == (cfg.evaluation.per_task, ["short", "long"])
