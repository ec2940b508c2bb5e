"""Settings that were ignored or checked only when their stage started now stop ``train`` before any step.

Each case goes through ``train(cfg)`` with a pipeline whose first stage would train for real, and
checks that nothing was trained (no stage directory), so a missing check fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from assemblies.presets import compose_config, mcpv45_tiny
from assemblies.training import preflight
from assemblies.training.pipeline import train
from assemblies.training.weights import load_weights
from tests.assemblies.training.conftest import FAST

TWO_STAGES = ["pipeline.stages=[stage1,stage3]", "stages.stage1.init_from=none", "pipeline.export=false"]
MISSING = "/nonexistent/mine.jsonl"
ROOT = Path(__file__).resolve().parents[3]
MINE = f"+data.corpora.mine={{_target_: blocks.data.formats.official_corpus, _partial_: true, train: {MISSING}}}"


def _trained(output_dir) -> list[str]:
    return sorted(p.name for p in output_dir.iterdir() if p.is_dir()) if output_dir.exists() else []


def test_a_plus_key_in_a_stage_pipeline_data_or_trainer_config_is_refused_with_the_close_match(fast_cfg, tmp_path):
    with pytest.raises(Exception, match="max_step"):  # without `+`, Hydra refuses it when composing
        fast_cfg(*TWO_STAGES, "stages.stage3.max_step=5")
    cfg = fast_cfg(*TWO_STAGES, "+stages.stage3.max_step=5", "+pipeline.stop_at=1", "+data.heldout_sizes=3",
                   "+trainer.max_epoch=1", "+evaluation.per_tasks=1", "+stages.stage1.data.mixx={captions: 1}")
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    message = str(stop.value)
    assert "stages.stage3.max_step: did you mean stages.stage3.max_steps?" in message
    assert "evaluation.per_tasks: did you mean evaluation.per_task?" in message
    assert "stages.stage1.data.mixx: did you mean stages.stage1.data.mix?" in message
    assert "pipeline.stop_at: did you mean pipeline.stop_at_step?" in message
    assert "data.heldout_sizes: did you mean data.heldout_size?" in message
    assert "trainer.max_epoch: trainer has _target_, accelerator" in message  # no close field: the fields
    assert _trained(tmp_path) == []


def test_a_plus_key_where_the_schema_allows_any_is_accepted():
    cfg = compose_config([*FAST, MINE, "+stages.stage3.data.mix.mine=0.5", "+stages.stage1.lr.llm=0.1"])
    assert preflight.unknown_keys(cfg) == []


def test_a_missing_data_file_or_corpus_of_a_later_stage_stops_before_the_first_stage(fast_cfg, tmp_path):
    cfg = fast_cfg(*TWO_STAGES, MINE, "+stages.stage3.data.mix.mine=0.5", "+stages.stage3.data.mix.scens=0.1")
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    message = str(stop.value)
    assert f"data.corpora.mine.train: {MISSING} does not exist (stage stage3)" in message
    assert "corpus 'scens' is not in data.corpora" in message
    assert _trained(tmp_path) == []


def test_a_bad_init_from_of_a_later_stage_stops_before_the_first_stage(fast_cfg, tmp_path):
    run = tmp_path / "earlier_run"
    (run / "stage2" / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    torch.save({"state_dict": {}}, run / "stage2" / "checkpoints" / "last.ckpt")
    out = tmp_path / "out"
    for source, expected in [(run / "stage2" / "checkpoints" / "last.ckpt",
                              f"Lightning training checkpoint.*pass the stage's weights, {run / 'stage2'}/model.safetensors"
                              r" \(written when the stage finishes\), or its directory"),
                             (run, "training run directory with no finished stage"),
                             (tmp_path / "nowhere", "no safetensors weights at .*nowhere: it does not exist")]:
        with pytest.raises(SystemExit, match=f"stage stage3: init_from: .*{expected}"):
            train(fast_cfg(*TWO_STAGES, f"stages.stage3.init_from={source}", output_dir=out))
        assert _trained(out) == []


def test_init_from_names_the_stages_of_a_run_directory_and_refuses_lightning_checkpoints(tmp_path):
    model = mcpv45_tiny()
    run = tmp_path / "run"
    (run / "stage1" / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\nstages: {stage1: {}, stage2: {}}\n")
    for stage in ("stage2", "stage1"):  # the recipe's order, not the files' age
        (run / stage).mkdir(exist_ok=True)
        save_file({"resampler.query": model.resampler.query.detach().clone()}, str(run / stage / "model.safetensors"))
    torch.save({"state_dict": {}}, run / "stage1" / "checkpoints" / "last.ckpt")
    with pytest.raises(FileNotFoundError, match=rf"{run} is a training run directory; its stages' weights are in "
                                                rf"stage1/, stage2/: pass one of those, e.g. {run / 'stage2'}"):
        load_weights(model, run)
    for ckpt in (run / "stage1" / "checkpoints" / "last.ckpt", run / "stage1" / "checkpoints"):
        with pytest.raises(ValueError, match=rf"pass the stage's weights, {run / 'stage1' / 'model.safetensors'}, "
                                             rf"or its directory {run / 'stage1'}$"):
            load_weights(model, ckpt)
    assert load_weights(model, run / "stage2", strict=False)  # what the messages point to loads


def test_the_first_stage_needs_the_weights_of_the_stage_before_it(fast_cfg, tmp_path):
    with pytest.raises(SystemExit, match=r"stage stage2: init_from=previous but .*stage1/model.safetensors will not "
                                         r"exist; run stage1 first"):
        train(fast_cfg("pipeline.stages=[stage2]"))
    assert _trained(tmp_path) == []


def test_an_output_directory_that_cannot_be_written_stops_with_one_line(fast_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match=rf"cannot write to the output directory {blocker}/run \(paths.output_dir\): "
                                         "Not a directory"):
        train(fast_cfg(*TWO_STAGES, output_dir=blocker / "run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_directory_stops_with_one_line(fast_cfg, tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    with pytest.raises(SystemExit, match="cannot write to the output directory .*Permission denied"):
        train(fast_cfg(*TWO_STAGES, output_dir=read_only))


def test_too_little_disk_space_stops_before_training_with_the_numbers(fast_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "free_bytes", lambda directory: 5 * 2 ** 20)
    with pytest.raises(SystemExit) as stop:
        train(fast_cfg(*TWO_STAGES))
    message = str(stop.value)
    assert f"not enough disk space in {tmp_path}: this run writes about" in message and "5.0 MiB are free" in message
    assert "stage1: 3 checkpoints x 2.6 MiB (weights + AdamW state of 22,144 trainable parameters)" in message
    assert "pipeline.check_disk=false" in message
    assert _trained(tmp_path) == []


def test_the_disk_estimate_counts_the_checkpoints_kept_with_optimizer_state(fast_cfg):
    from assemblies.training.config import pipeline_stages

    cfg = fast_cfg("pipeline.stages=[stage1]", "pipeline.export=false")
    total = sum(p.numel() for p in mcpv45_tiny().parameters())
    one, _ = preflight.disk_need(cfg, pipeline_stages(cfg))
    cfg = fast_cfg("pipeline.stages=[stage1]", "pipeline.export=false", "callbacks.model_checkpoint.save_top_k=3")
    three, _ = preflight.disk_need(cfg, pipeline_stages(cfg))
    assert three - one == 2 * (total + 2 * 22_144) * 4  # two more files of fp32 weights + AdamW's two moments
    assert one == 3 * (total + 2 * 22_144) * 4 + total * 4  # last, best, the one being written; model.safetensors


def test_the_hydra_callback_stops_an_uncreatable_run_directory_before_hydra_writes_there(tmp_path):
    (tmp_path / "a_file").write_text("")
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "a_file" / "run")}}})
    with pytest.raises(SystemExit, match=r"a_file/run \(hydra.run.dir\): Not a directory"):
        preflight.RunDirCheck().on_run_start(config)
    assert "assemblies.training.preflight.RunDirCheck" in (ROOT / "conf" / "hydra" / "default.yaml").read_text()
