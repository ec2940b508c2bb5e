"""dev.py: the commands it runs inside the environment (tasks, the tests, the examples)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
dev = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dev)


def test_an_example_runs_by_name_or_prefix_inside_the_environment():
    python = Path(sys.executable)
    cmd = dev.command(["example", "01", "--flag"], python)
    assert cmd == [sys.executable, str(ROOT / "examples" / "01_resampler.py"), "--flag"]
    assert dev.command(["example", "01_resampler.py"], python) == cmd[:2]
    run = subprocess.run(cmd[:2], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "3d: (64, 64) tokens" in run.stdout


def test_tasks_and_tests_keep_their_commands():
    python = Path("/env/python")
    assert dev.command(["train", "+assembly=mcpv45", "scale=tiny"], python) == [
        "/env/python", str(ROOT / "tasks" / "train.py"), "+assembly=mcpv45", "scale=tiny"]
    assert dev.command(["test", "-q"], python) == ["/env/python", "-m", "pytest", "-q"]


@pytest.mark.parametrize("argv, message", [
    (["example"], "one of 01_resampler, 02_build_and_export, 03_train_tiny, 04_finetune_data"),
    (["example", "0"], "more than one example '0'"),
    (["inspect"], "no task 'inspect'; choose one of: benchmark, corruption_sheet, describe, train"),
])
def test_an_unknown_name_is_refused_before_anything_is_installed(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(dev, "ensure_environment", lambda: pytest.fail("would install"))
    assert dev.main(argv) == 2
    assert message in capsys.readouterr().out
