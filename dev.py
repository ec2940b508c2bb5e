#!/usr/bin/env python3
"""Set up and run the project with nothing but Python installed.

    python dev.py test [pytest args]   # the test suite (what CI runs)
    python dev.py <task> [overrides]   # tasks/<task>.py inside the environment, e.g. train, inspect

The first call creates the virtual environment at ``.venv`` in the repository root and installs the
project into it (``pip install -e .[test]``); later calls reuse it and reinstall only when
``pyproject.toml`` changed. Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".mcpv-install-stamp"


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_environment() -> None:
    """Create ``.venv`` and install the project unless the stamp says it is current."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating the virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    _run([str(PYTHON), "-m", "pip", "install", "--upgrade", "pip"])
    _run([str(PYTHON), "-m", "pip", "install", "-e", f"{ROOT}[test]"])
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "test":
        cmd = [str(PYTHON), "-m", "pytest", *rest]
    else:
        task = ROOT / "tasks" / f"{command}.py"
        if not task.exists():
            known = sorted(p.stem for p in (ROOT / "tasks").glob("*.py") if not p.stem.startswith("_"))
            print(f"unknown command {command!r}; use 'test' or one of the tasks: {', '.join(known)}")
            return 2
        cmd = [str(PYTHON), str(task), *rest]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
