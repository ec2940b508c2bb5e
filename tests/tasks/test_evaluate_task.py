"""tasks/evaluate.py in a subprocess: an official-format directory, an export without tokenizer files,
a reference file, resume and score_only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["corpora=[scenes]", "per_task=1", "max_new_tokens.short=2", "max_new_tokens.long=4", "batch_size=3"]


def run_task(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "tasks" / "evaluate.py"), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_evaluate_an_official_directory_then_resume_and_rescore(tiny_chat_checkpoint, tmp_path):
    out = tmp_path / "run"
    run_task(f"checkpoint={tiny_chat_checkpoint}", f"output_dir={out}", *SMALL)
    rows = lines(out / "predictions.jsonl")
    assert sorted((r["task"], r["mode"]) for r in rows) == sorted(
        (t, m) for t in ("scene_colour", "scene_count", "scene_position") for m in ("short", "long"))
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores["tasks"]) == 6 and scores["generated"] == 6 and "scene_count" in (out / "scores.md").read_text()
    assert "predictions scored" in (out / "evaluate.log").read_text()
    run_task(f"checkpoint={tiny_chat_checkpoint}", f"output_dir={out}", "resume=true", *SMALL)
    assert json.loads((out / "scores.json").read_text())["generated"] == 0 and lines(out / "predictions.jsonl") == rows
    run_task(f"score_only={out / 'predictions.jsonl'}", f"output_dir={tmp_path / 'rescored'}")
    assert json.loads((tmp_path / "rescored" / "scores.json").read_text())["tasks"] == scores["tasks"]


@pytest.mark.slow
def test_evaluate_an_export_without_tokenizer_on_a_reference_file(tiny_chat_checkpoint, tmp_path):
    export = tmp_path / "export"  # what the main job's export holds today: config.json and the weights
    export.mkdir()
    for path in tiny_chat_checkpoint.iterdir():
        if path.name == "config.json" or path.name.startswith("model"):
            shutil.copy(path, export / path.name)
    Image.new("RGB", (112, 112), (200, 30, 30)).save(tmp_path / "red.png")
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"id": "q1", "image": "red.png", "conversations": [
        {"role": "user", "content": "What colour?"}, {"role": "assistant", "content": "red"}]}) + "\n")
    out = tmp_path / "run"
    run_task(f"checkpoint={export}", f"tokenizer={tiny_chat_checkpoint}", "processor.scale_resolution=112",
             "processor.max_slice_nums=1", 'stop_tokens=["<|im_end|>","<|endoftext|>"]', f"data={data}",
             "modes=[short]", "max_new_tokens.short=3", f"output_dir={out}")
    (row,) = lines(out / "predictions.jsonl")
    assert (row["id"], row["task"], row["reference"], row["mode"]) == ("q1", "mine", "red", "short")
