"""tasks/train.py from the command line: the tiny pipeline, the full-scale refusal, a sweep, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
FAST = ["+assembly=mcpv45", "scale=tiny", "+debug=fast", "data.heldout=[digits,scenes]", "data.heldout_size=6"]


def _train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "tasks" / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_full_scale_on_a_cpu_machine_stops_at_once_with_what_it_needs(tmp_path):
    inputs = [f"paths.{name}={tmp_path}" for name in ("siglip_dir", "qwen3_dir", "tokenizer_dir")]
    done = _train("+assembly=mcpv45", *inputs, f"hydra.run.dir={tmp_path}", "trainer.accelerator=cpu", timeout=120)
    assert done.returncode != 0
    message = done.stdout + done.stderr
    assert "8,695,895,280 parameters" in message and "GiB" in message and "scale=tiny" in message
    assert not (tmp_path / "stage1").exists()


def test_without_an_assembly_it_says_how_to_choose_one(tmp_path):
    done = _train("scale=tiny", f"hydra.run.dir={tmp_path}", timeout=120)
    assert done.returncode != 0
    assert "+assembly=<name> (available: mcpv45)" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # a Hydra process (~50 s on the loaded 2-core machine)
def test_help_without_an_assembly_shows_the_config_and_how_to_choose_one(tmp_path):
    done = _train("--help", f"hydra.run.dir={tmp_path}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr and "InterpolationResolutionError" not in done.stderr
    assert "\npipeline:\n" in done.stdout and "\nstages:\n" in done.stdout  # the composed config
    assert "no assembly chosen, so the config above is +assembly=mcpv45's" in done.stdout


@pytest.mark.slow  # a Hydra process (~50 s on the loaded 2-core machine)
def test_a_run_directory_that_cannot_be_created_stops_with_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    done = _train(*FAST, f"hydra.run.dir={tmp_path}/a_file/run", timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"cannot write to the output directory {tmp_path}/a_file/run (hydra.run.dir): "
                                   f"Not a directory ({tmp_path}/a_file/run). Choose a directory you can write: "
                                   "hydra.run.dir=<dir> on the command line (paths.output_dir follows it)")


@pytest.mark.slow
def test_tiny_pipeline_runs_every_stage_exports_and_plots(tmp_path):
    done = _train(*FAST, f"hydra.run.dir={tmp_path}")  # the tiny recipe runs every stage, RL and DPO included
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("stage0", "stage1", "stage2", "stage3", "sft", "sft_long_cot", "rl_hybrid"):
        assert f"== {stage}: 2 steps" in done.stdout
        assert (tmp_path / stage / "model.safetensors").is_file()
    # A random model's descriptions give no preference pair: the DPO stage says so and passes the weights on.
    dpo = json.loads((tmp_path / "rlaif_dpo" / "result.json").read_text())
    assert dpo["finished"] and "pairs" in dpo["preferences"] and (tmp_path / "rlaif_dpo" / "model.safetensors").is_file()
    assert "scene_count" in done.stdout and "digit" in done.stdout  # per-task held-out rows
    stage0 = done.stdout.split("== stage0")[1].split("== stage1")[0]
    assert "dense_caption" in stage0 and "doc_ocr" in stage0  # stage0 reports retrieval per caption kind
    retrieval = json.loads((tmp_path / "stage0" / "result.json").read_text())["tasks"]
    assert all(0 < task["chance"] <= 1 for task in retrieval.values())  # measured on the held-out batches
    with safe_open(tmp_path / "stage0" / "model.safetensors", "pt") as weights:  # the text tower is dropped
        assert {key.split(".")[0] for key in weights.keys()} == {"vpm", "resampler", "llm"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["stage0", "stage1", "stage2", "stage3", "sft", "sft_long_cot",
                                                       "rl_hybrid", "rlaif_dpo"]
    per_stage = {s["stage"]: s for s in metrics["stages"]}  # a DPO stage without pairs trains no tokens
    assert 0.0 <= metrics["val/acc"] <= 1.0 and per_stage["sft_long_cot"]["tokens_per_sample"] > 16
    assert (tmp_path / "export" / "config.json").is_file() and (tmp_path / "curves.png").is_file()
    # Generated answers in both modes after every LLM stage, beside the teacher-forced numbers.
    generated = per_stage["sft_long_cot"]["tasks"]["digit"]
    assert metrics["figures_from"] == "rlaif_dpo" and all(0.0 <= generated[mode]["acc"] <= 1.0 for mode in ("short", "long"))
    # The pair-less DPO stage passes the weights on without training: no peak of its own.
    assert set(metrics["peak_memory_mb_by_stage"]) == {s["stage"] for s in metrics["stages"]} - {"rlaif_dpo"}
    assert per_stage["sft_long_cot"]["samples_per_s"] > 0 and metrics["wall_seconds"] > 0
    assert (tmp_path / "sft" / "predictions.jsonl").is_file() and not (tmp_path / "stage0" / "predictions.jsonl").exists()
    # Each stage says what it trains on; stage3 names the thinking-mode data it adds.
    assert "videos_cot (videos, reasoning=True)" in done.stdout.split("-- stage3")[1].split("== stage3")[0]
    # The stage tables also go to the log file; Lightning's per-trainer tips and notices do not repeat.
    log = (tmp_path / "train.log").read_text()
    assert all(f"== {stage}: 2 steps" in log for stage in ("stage0", "sft_long_cot"))
    output = done.stdout + done.stderr
    assert "litlogger" not in output and "transfer_batch_to_device" not in output and "GPU available" not in output


@pytest.mark.slow
def test_resampler_sweep_writes_a_summary(tmp_path):
    done = _train("-m", *FAST, "pipeline.stages=[stage3]", "stages.stage3.init_from=none",
                  "resampler=resampler3d,mlp", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "summary.md").read_text()
    assert "resampler=resampler3d" in table and "resampler=mlp" in table
    assert (tmp_path / "summary.png").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two processes at once: never beside another such test
def test_ddp_with_two_cpu_processes(tmp_path):
    done = _train(*FAST, "pipeline.stages=[stage1,stage3]", "stages.stage1.init_from=none", "trainer=ddp_cpu",
                  f"hydra.run.dir={tmp_path}",
                  "pipeline.export=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 1/2" in done.stderr + done.stdout  # Lightning's rank-0 line for a world of 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["stage1", "stage3"]
    # Rank 1 ran inside the same Hydra run directory (its log is there) and created no directory of its own.
    assert (tmp_path / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [".hydra", "stage1", "stage3", "tokenizer"]


@pytest.mark.slow
def test_a_stage_trains_on_an_official_format_jsonl(tmp_path):
    lines = [{"id": f"c{i}", "conversations": [{"role": "user", "content": f"What is {i} plus one?"},
                                               {"role": "assistant", "content": f"<think>\n{i}+1\n</think>\n\n{i + 1}"}]}
             for i in range(12)]
    data = tmp_path / "cot.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    corpus = f"{{_target_: blocks.data.formats.official_corpus, _partial_: true, train: {data}}}"
    done = _train(*FAST, "pipeline.stages=[sft_long_cot]", "stages.sft_long_cot.init_from=none",
                  f"+data.corpora.cot={corpus}", "~stages.sft_long_cot.data.mix",
                  "+stages.sft_long_cot.data.mix={cot: 1.0}", "pipeline.export=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== sft_long_cot: 2 steps" in done.stdout
    assert (tmp_path / "run" / "sft_long_cot" / "model.safetensors").is_file()
