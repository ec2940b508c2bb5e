"""Runs examples/02_build_and_export.py as a script and checks what it reports."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "02_build_and_export.py"


def test_example_builds_exports_and_reloads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path / "tiny")])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "full: vpm 417,792,240, resampler 88,907,776, llm 8,189,195,264, total 8,695,895,280" in out
    assert "full export: 849 tensors, 17,391,790,560 bytes in bf16, 4 shards" in out
    assert "reloaded: identical logits True" in out
    assert "resampler=mlp: MLPProjector, 64 tokens per image" in out
    files = sorted(p.name for p in (tmp_path / "tiny").iterdir())
    assert "config.json" in files and "model.safetensors.index.json" in files
    assert any(name.startswith("model-00002-of-") for name in files)
