"""What a run reports: stage intros and tables, the loss-jump note, the log file, per-stage peak memory,
the gradient norm, and the series behind curves.png."""

from __future__ import annotations

import csv
import logging
import time
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from assemblies.training import report
from assemblies.training.callbacks import GradNorm, PeakMemory
from assemblies.training.curves import _collect, plot_curves

CORPORA = OmegaConf.create({"scenes": {"_target_": "make_corpus", "name": "scenes"},
                            "scenes_cot": {"_target_": "make_corpus", "name": "scenes", "reasoning": True}})


def stage(mix: dict, objective=None) -> OmegaConf:
    return OmegaConf.create({"name": "s", "description": "long-CoT SFT", "objective": objective, "trainable": ["llm"],
                             "data": {"mix": mix}, "max_steps": 60, "batch_size": 32})


def test_a_stage_intro_names_the_data_no_earlier_stage_trained_on():
    intro = report.stage_intro(stage({"scenes": 0.5, "scenes_cot": 0.5}), CORPORA, seen={"scenes"})
    assert intro["new_data"] == ["scenes_cot (scenes, reasoning=True)"]
    text = report.intro_text("sft_long_cot", intro)
    assert "long-CoT SFT" in text and "scenes_cot 0.50" in text and "no earlier stage trained on: scenes_cot" in text


def result(name: str, loss_start: float, loss_end: float, intro: dict, generation: bool = True) -> dict:
    tasks = {"digit": {"acc": 0.5, "anls": 0.6, "cer": 0.4, "chance": 0.1}}
    if generation:
        tasks["digit"].update(short={"acc": 0.75, "stderr": 0.05, "tokens": 2.0, "format_fail": 0.0},
                              long={"acc": 0.0, "stderr": 0.0, "tokens": 9.5, "format_fail": 1.0})
    return {"stage": name, "steps": 10, "seconds": 12.0, "eval_seconds": 3.0, "trainable_params": 1000,
            "loss_start": loss_start, "loss_end": loss_end, "tasks": tasks, "samples_per_s": 20.0,
            "peak_memory_mb": 900.0, **intro}


def test_the_stage_table_shows_both_modes_beside_teacher_forcing_and_explains_a_loss_jump():
    sft = result("sft", 1.0, 0.5, report.stage_intro(stage({"scenes": 1.0}), CORPORA, set()))
    cot = result("sft_long_cot", 10.0, 9.0, report.stage_intro(stage({"scenes_cot": 1.0}), CORPORA, {"scenes"}))
    table = report.stage_table(cot, sft)
    assert "loss starts at 10.00, sft ended at 0.50: data sft did not train on: scenes_cot" in table
    assert "short" in table and "long" in table and "20.0 samples/s" in table and "peak 900 MB" in table
    digit = next(line for line in table.splitlines() if line.strip().startswith("digit"))
    assert digit.split()[1:6] == ["0.100", "0.500", "0.750", "0.05", "2"]
    assert "loss starts" not in report.stage_table(sft, cot)  # no jump
    contrastive = result("stage0", 3.0, 2.0, report.stage_intro(stage({"scenes": 1.0}, {"_target_": "x.Contrastive"}),
                                                                CORPORA, set()), generation=False)
    assert "another objective" in report.stage_table(sft | {"loss_start": 7.0}, contrastive)
    assert "±se" not in report.stage_table(contrastive)


def test_the_table_shows_the_change_from_the_previous_stage_only_on_the_same_held_out_records():
    def scored(acc: float, stderr: float, samples: int = 512) -> dict:
        return {"acc": acc, "stderr": stderr, "samples": samples, "tokens": 2.0, "format_fail": 0.0}

    assert report.change_in_se(scored(0.50, 0.03), scored(0.40, 0.04)) == pytest.approx(2.0)  # 0.10 / 0.05
    assert report.change_in_se(scored(0.50, 0.03), scored(0.40, 0.04, samples=32)) is None
    assert report.change_in_se(scored(1.0, 0.0), scored(1.0, 0.0)) == 0.0
    assert report.change_in_se(scored(1.0, 0.0), scored(0.0, 0.0)) is None
    assert report.change_in_se(scored(0.5, 0.03) | {"samples": None}, scored(0.4, 0.04) | {"samples": None}) is None
    intro = report.stage_intro(stage({"scenes": 1.0}), CORPORA, set())
    before, after = result("sft_long_cot", 1.0, 0.5, intro), result("rl_hybrid", 1.0, 0.5, intro)
    before["tasks"]["digit"].update(short=scored(0.40, 0.04), long=scored(0.20, 0.03))
    after["tasks"]["digit"].update(short=scored(0.50, 0.03), long=scored(0.14, 0.05))
    table = report.stage_table(after, before)
    digit = next(line for line in table.splitlines() if line.strip().startswith("digit")).split()
    assert (digit[7], digit[12]) == ("+2.0", "-1.0") and "change from sft_long_cot" in table
    before["tasks"]["digit"].update(short=scored(0.40, 0.04, samples=32), long=scored(0.20, 0.03, samples=32))
    assert "Δ/se" not in report.stage_table(after, before)


def test_announce_prints_once_and_writes_the_log_file(tmp_path, capsys):
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        report.announce("== stage3: a table")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert capsys.readouterr().out == "== stage3: a table\n"
    assert "== stage3: a table" in (tmp_path / "train.log").read_text()


def test_peak_memory_is_measured_per_stage_not_over_the_process_lifetime():
    first, second = PeakMemory(torch.device("cpu"), interval=0.01), PeakMemory(torch.device("cpu"), interval=0.01)
    if "sampled" not in first.method:
        pytest.skip("needs /proc (Linux)")
    first.start()
    big = torch.ones(96 * 2**20 // 4)  # 96 MiB, touched
    time.sleep(0.2)
    del big
    first.stop()
    second.start()
    time.sleep(0.05)
    second.stop()
    assert first.peak_mb - second.peak_mb > 60


def test_grad_norm_is_the_global_norm_before_clipping():
    weights = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    weights[0].grad, weights[1].grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0])
    logged = {}
    module = SimpleNamespace(log=lambda name, value, **kw: logged.update({name: float(value)}))
    optimizer = torch.optim.SGD(weights, lr=0.1)
    GradNorm().on_before_optimizer_step(None, module, optimizer)
    assert logged == {"train/grad_norm": pytest.approx(5.0)}


def write_csv(path, rows):
    path.mkdir(parents=True)
    keys = sorted({k for row in rows for k in row})
    with (path / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def test_curves_separate_retrieval_from_exact_match_and_follow_the_steps(tmp_path):
    write_csv(tmp_path / "stage0" / "csv" / "attempt0", [
        {"step": 0, "train/loss": 9.0, "lr-AdamW/vpm": 1e-3, "train/grad_norm": 3.0},
        {"step": 1, "train/loss": 8.0, "val/doc_ocr/acc": 0.6, "val/doc_ocr/chance": 0.1, "val/acc": 0.6}])
    write_csv(tmp_path / "stage3" / "csv" / "attempt0", [
        {"step": 0, "train/loss": 6.0, "lr-AdamW/vpm": 1e-4, "lr-AdamW/vpm/no_decay": 1e-4},
        {"step": 1, "train/loss": 5.0, "gen/short/doc_ocr/acc": 0.2, "gen/short/acc": 0.2},
        {"step": 3, "train/loss": 4.0, "val/doc_ocr/acc": 0.3, "gen/short/doc_ocr/acc": 0.4,
         "gen/long/doc_ocr/acc": 0.1}])
    data = _collect([tmp_path / "stage0", tmp_path / "stage3"])
    assert data["retrieval"] == {"doc_ocr": [(1, 0.6)]} and data["forced"] == {"doc_ocr": [(5, 0.3)]}
    assert data["short"] == {"doc_ocr": [(3, 0.2), (5, 0.4)]} and data["long"] == {"doc_ocr": [(5, 0.1)]}
    assert data["lr"] == {"vpm": [(0, 1e-3), (2, 1e-4)]} and data["grad_norm"]["all blocks"] == [(0, 3.0)]
    assert data["loss"]["stage3"] == [(0, 6.0), (1, 5.0), (3, 4.0)]
    (path,) = plot_curves([tmp_path / "stage0", tmp_path / "stage3"], tmp_path)
    assert path.stat().st_size > 20000
