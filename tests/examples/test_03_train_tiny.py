"""Runs examples/03_train_tiny.py (with the 2-steps-per-stage debug preset) and checks what it reports."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "03_train_tiny.py"


@pytest.mark.slow
def test_example_trains_every_stage_exports_reloads_and_answers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path), "+debug=fast", "data.heldout=[digits]",
                                      "data.heldout_size=4", "pipeline.plots=true"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    for stage in ("stage0", "stage1", "stage2", "stage3", "sft", "sft_long_cot", "rl_hybrid"):
        assert f"== {stage}: 2 steps" in out
    assert "== rlaif_dpo: 0 steps" in out  # a 2-step model's descriptions give no preference pair to train on
    assert "mean held-out exact match after the last stage:" in out
    assert out.count("digits: 'What digit is this?' -> ") == 4   # the reloaded export generates answers
    assert (tmp_path / "export" / "config.json").is_file() and (tmp_path / "curves.png").stat().st_size > 10_000
