"""Rerunning into a run directory: stages are reused only under the settings that trained them."""

from __future__ import annotations

import pytest
import yaml
from safetensors.torch import load_file

from assemblies.training.config import pipeline_stages, run_config_yaml
from assemblies.training.pipeline import train
from assemblies.training.preflight import preflight

# Generation-based evaluation cut to one short answer per task: these tests are about the weights.
QUICK = ["stages.stage1.init_from=none", "pipeline.export=false", "evaluation.per_task=1", "evaluation.modes=[short]"]
TWO_STAGES = ["pipeline.stages=[stage1,stage3]", *QUICK]
# rerun.WEIGHT_NEUTRAL settings that leave the weights bit for bit (threads changes float rounding only).
NEUTRAL = ["trainer.log_every_n_steps=2", "data.heldout_size=2", "evaluation.per_task=2",
           "callbacks.model_checkpoint.every_n_train_steps=1", "data.eval_batch_size=3", "task_name=other"]


def _files(run) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.suffix in (".yaml", ".json", ".safetensors")}


def _max_steps(record) -> dict[str, int]:
    return {name: stage["max_steps"] for name, stage in yaml.safe_load(record.read_text())["stages"].items()}


def _finished_stages(cfg, run, names) -> None:
    """Stage directories as a finished run leaves them, recorded with ``cfg``'s settings (no training)."""
    for name in names:
        (run / name).mkdir(parents=True)
        for file in ("result.json", "model.safetensors"):
            (run / name / file).write_text("{}")
        (run / name / "config.yaml").write_text(run_config_yaml(cfg))


def test_a_rerun_that_would_reuse_stages_trained_otherwise_stops_naming_the_keys(fast_cfg, tmp_path):
    cfg = fast_cfg(*TWO_STAGES)
    pipeline_stages(cfg)
    _finished_stages(cfg, tmp_path, ["stage1", "stage3"])
    with pytest.raises(SystemExit) as stop:
        train(fast_cfg(*TWO_STAGES, "stages.stage3.lr.resampler=0.5", "seed=3"))
    message = str(stop.value)
    assert "  stage1: seed: 0 -> 3\n  stage3: seed: 0 -> 3; stages.stage3.lr.resampler: 0.0003 -> 0.5\n" in message
    _finished_stages(cfg, tmp_path, ["sft"])
    with pytest.raises(SystemExit, match=r"\n  stage3: stages.stage3.batch_size: 2 -> 3\n  sft: trained after a changed"):
        train(fast_cfg(*TWO_STAGES, "stages.stage3.batch_size=3"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft", "stage1", "stage3"]  # nothing written or deleted
    neutral = fast_cfg(*TWO_STAGES, *NEUTRAL, "threads=1")
    assert preflight(neutral, pipeline_stages(neutral)) is not None  # not refused


@pytest.mark.slow
def test_other_settings_are_refused_by_name_or_retrain_the_changed_stage_and_every_later_one(fast_cfg, tmp_path):
    train(fast_cfg(*TWO_STAGES))
    first = _files(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train(fast_cfg(*TWO_STAGES, "stages.stage1.max_steps=3"))
    message = str(stop.value)
    assert "  stage1: stages.stage1.max_steps: 2 -> 3\n  stage3: trained after a changed stage\n" in message
    assert "pipeline.restart_changed=true (deletes stage1/, stage3/" in message
    assert _files(tmp_path) == first  # no config, metrics or weights rewritten

    train(fast_cfg(*TWO_STAGES, "stages.stage1.max_steps=3", "pipeline.restart_changed=true"))
    second = _files(tmp_path)
    for stage in ("stage1", "stage3"):  # the changed stage and the one after it, trained again
        assert _max_steps(tmp_path / stage / "config.yaml") == {"stage1": 3, "stage3": 2}
        assert second[f"{stage}/model.safetensors"] != first[f"{stage}/model.safetensors"]
    assert _max_steps(tmp_path / "config.yaml") == {"stage1": 3, "stage3": 2}
    assert yaml.safe_load(second["stage1/result.json"])["steps"] == 3

    # Only the later stage changed: the earlier one is kept, the later one retrained from it.
    with pytest.raises(SystemExit, match=r"\n  stage3: stages.stage3.lr.resampler: 0.0003 -> 0.5\n"):
        train(fast_cfg(*TWO_STAGES, "stages.stage1.max_steps=3", "stages.stage3.lr.resampler=0.5"))
    train(fast_cfg(*TWO_STAGES, "stages.stage1.max_steps=3", "stages.stage3.lr.resampler=0.5",
                   "pipeline.restart_changed=true"))
    third = _files(tmp_path)
    assert third["stage1/result.json"] == second["stage1/result.json"]  # reused, not retrained
    assert third["stage3/model.safetensors"] != second["stage3/model.safetensors"]


@pytest.mark.slow
def test_weight_neutral_settings_give_the_same_weights_and_are_not_refused(fast_cfg, tmp_path):
    one_stage = ["pipeline.stages=[stage1]", *QUICK]
    train(fast_cfg(*one_stage, output_dir=tmp_path / "a"))
    train(fast_cfg(*one_stage, *NEUTRAL, output_dir=tmp_path / "b"))
    a, b = (load_file(tmp_path / run / "stage1" / "model.safetensors") for run in "ab")
    assert a.keys() == b.keys() and all(a[key].equal(b[key]) for key in a)
    reused = _files(tmp_path / "a")
    train(fast_cfg(*one_stage, *NEUTRAL, output_dir=tmp_path / "a"))
    assert _files(tmp_path / "a")["stage1/result.json"] == reused["stage1/result.json"]
