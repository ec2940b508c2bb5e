"""tasks/describe.py from the command line: the documented table, read-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a Hydra process that imports the whole toolkit (~30 s on CI's 2 cores)
def test_the_task_prints_the_documented_numbers_in_pipeline_order(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "tasks" / "describe.py"), "+assembly=mcpv45"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for number in ("417,792,240", "88,907,776", "8,189,195,264", "8,695,895,280"):
        assert number in run.stdout
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith(("stage", "sft", "rl"))][1:]  # after the header
    assert [row[0] for row in rows] == ["stage1", "stage2", "stage3", "sft", "sft_long_cot", "rl_hybrid", "rlaif_dpo"]
    assert "bf16-mixed" in run.stdout
    # total GiB, per GPU on 1 and on 8 (the README's table), then the micro-batch's tokens and LLM activations:
    # every pre-training stage checkpoints its layers (stages 1-2 would keep 56.8 GiB without)
    assert [row[-5:] for row in rows[:3]] == [["17.4", "17.4", "2.2", "8192", "8.5"],
                                              ["22.8", "22.8", "2.9", "8192", "8.5"],
                                              ["129.6", "129.6", "16.2", "8192", "8.5"]]
    assert list(tmp_path.iterdir()) == []  # a read-only report writes no files
