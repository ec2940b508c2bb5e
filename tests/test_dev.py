"""dev.py: the commands it runs inside the environment (tasks, the tests, the examples) and the lock it
installs from."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
dev = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dev)
PYTHON = Path("/env/bin/python")


def test_latest_is_a_flag_before_the_command():
    assert dev.parse(["--latest", "test", "-q", "-x"]) == (True, "test", ["-q", "-x"])
    assert dev.parse(["test", "--latest"]) == (False, "test", ["--latest"])  # after the command: pytest's argument
    assert dev.parse(["train", "+assembly=mcpv45"]) == (False, "train", ["+assembly=mcpv45"])
    assert dev.parse([]) == (False, None, []) and dev.parse(["--latest"]) == (True, None, [])


def test_the_commands_run_inside_the_environment():
    assert dev.run_command("test", ["-m", "not slow"], PYTHON) == [str(PYTHON), "-m", "pytest", "-n", "2", "--dist",
                                                                   "loadgroup", "-m", "not slow"]
    assert dev.run_command("test", ["-p", "no:xdist"], PYTHON) == [str(PYTHON), "-m", "pytest", "-p", "no:xdist"]
    assert dev.run_command("train", ["scale=tiny"], PYTHON) == [str(PYTHON), str(ROOT / "tasks" / "train.py"),
                                                                "scale=tiny"]
    assert dev.run_command("lock", [], PYTHON)[1:] == ["-m", "pip", "freeze", "--exclude-editable"]


def test_an_example_runs_by_name_or_prefix_inside_the_environment():
    python = Path(sys.executable)
    cmd = dev.run_command("example", ["01", "--flag"], python)
    assert cmd == [sys.executable, str(ROOT / "examples" / "01_resampler.py"), "--flag"]
    assert dev.run_command("example", ["01_resampler.py"], python) == cmd[:2]
    run = subprocess.run(cmd[:2], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "3d: (64, 64) tokens" in run.stdout


def test_install_uses_the_lock_unless_told_otherwise(tmp_path, capsys):
    locked = dev.install_command(PYTHON, locked=True)
    assert locked[:5] == [str(PYTHON), "-m", "pip", "install", "-e"] and locked[-2:] == ["--constraint",
                                                                                          str(dev.LOCK)]
    latest = dev.install_command(PYTHON, locked=False)
    assert "--constraint" not in latest and latest[-3:] == ["--upgrade", "--upgrade-strategy", "eager"]

    lock = tmp_path / "constraints.txt"
    lock.write_text("# python: 3.11 on linux.\ntorch==2.14.1\n")
    assert dev.use_lock(False, lock, (3, 11)) and not dev.use_lock(True, lock, (3, 11))
    assert not dev.use_lock(False, lock, (3, 12))
    assert "made with Python 3.11, this is 3.12" in capsys.readouterr().out
    assert not dev.use_lock(False, tmp_path / "absent.txt", (3, 11))


@pytest.mark.parametrize("argv, message", [
    (["example"], "one of 01_resampler, 02_build_and_export, 03_train_tiny, 04_finetune_data"),
    (["example", "0"], "more than one example '0'"),
    (["--latest", "inspect"], "no task 'inspect'; choose one of: benchmark, chat, corruption_sheet, describe, "
                              "evaluate, train"),
])
def test_an_unknown_name_is_refused_before_anything_is_installed(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(dev, "ensure_environment", lambda latest: pytest.fail("would install"))
    assert dev.main(argv) == 2
    assert message in capsys.readouterr().out


def test_the_lock_pins_every_dependency_with_a_registry_version():
    text = dev.LOCK.read_text()
    assert dev.lock_python() is not None
    pins = dict(line.split("==") for line in text.splitlines() if line and not line.startswith("#"))
    assert all(re.fullmatch(r"[0-9][0-9a-z.]*", version) for version in pins.values()), \
        "a local version label (e.g. +cpu) exists on this machine only"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {canonicalize_name(name) for name in pins}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(line)
        assert canonicalize_name(requirement.name) in pinned, requirement.name
        assert requirement.specifier.contains(pins[next(n for n in pins if canonicalize_name(n) ==
                                                        canonicalize_name(requirement.name))]), line
