#!/usr/bin/env python3
"""Set up and run the project with nothing but Python installed.

    python dev.py test [pytest args]          # the test suite (what CI runs)
    python dev.py <task> [overrides]          # tasks/<task>.py inside the environment, e.g. train, describe
    python dev.py example <name> [args]       # examples/<name>.py, e.g. 01_resampler (a unique prefix will do)

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


def _scripts(folder: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / folder).glob("*.py") if not p.stem.startswith("_"))


def _script(folder: str, name: str) -> Path:
    """``<folder>/<name>.py``, or the one script of ``folder`` whose name starts with ``name``.

    Raises:
        ValueError: no script, or several, match (the message lists them).
    """
    scripts = _scripts(folder)
    matches = [s for s in scripts if s == name.removesuffix(".py")] or [s for s in scripts if s.startswith(name)]
    if len(matches) != 1:
        raise ValueError(f"{'no' if not matches else 'more than one'} {folder[:-1]} {name!r}; choose one of: "
                         f"{', '.join(scripts)}")
    return ROOT / folder / f"{matches[0]}.py"


def command(argv: list[str], python: Path = PYTHON) -> list[str]:
    """What ``python dev.py <argv>`` runs with the environment's ``python``.

    Raises:
        ValueError: an unknown task or example (the message lists the known ones).
    """
    name, rest = argv[0], argv[1:]
    if name == "test":
        return [str(python), "-m", "pytest", *rest]
    if name == "example":
        if not rest:
            raise ValueError(f"name the example: python dev.py example <name> [args]; one of {', '.join(_scripts('examples'))}")
        return [str(python), str(_script("examples", rest[0])), *rest[1:]]
    try:
        return [str(python), str(_script("tasks", name)), *rest]
    except ValueError as error:
        raise ValueError(f"{error}; or 'test', or 'example <name>'") from None


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        command(argv)  # an unknown name is reported before anything is installed
    except ValueError as error:
        print(error)
        return 2
    ensure_environment()
    cmd = command(argv)
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
