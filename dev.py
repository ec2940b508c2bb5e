#!/usr/bin/env python3
"""Set up and run the project with nothing but Python installed.

    python dev.py test [pytest args]          # the test suite on 2 workers (what CI runs); -n 0: one process
    python dev.py <task> [overrides]          # tasks/<task>.py inside the environment, e.g. train, describe
    python dev.py example <name> [args]       # examples/<name>.py, e.g. 01_resampler (a unique prefix will do)
    python dev.py --latest <command>          # install the newest releases the floors allow, not the lock
    python dev.py lock                        # write the environment's versions to constraints.txt

The first call creates the virtual environment at ``.venv`` in the repository root and installs the
project into it (``pip install -e .[test]``) with the exact versions of ``constraints.txt``, the ones
the test suite last passed with; ``--latest`` lets pip pick the newest instead (then ``python dev.py
test`` and ``python dev.py lock`` renew the lock). Later calls reuse the environment and reinstall
only when ``pyproject.toml``, the lock or the choice between them changed. The lock was made with the
Python its header names; another Python version installs the newest releases, with a notice.
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".mcpv-install-stamp"
LOCK = ROOT / "constraints.txt"
LATEST = "--latest"
# One test worker per core of CI's 2-core machine; tests of one xdist_group share a worker (tests/conftest.py).
PARALLEL = ["-n", "2", "--dist", "loadgroup"]


def lock_python(lock: Path = LOCK) -> str | None:
    """The ``major.minor`` Python version the lock's header names (``# python: 3.11``), None without a lock."""
    if not lock.is_file():
        return None
    found = re.search(r"^# python: (\d+\.\d+)", lock.read_text(), re.MULTILINE)
    return found.group(1) if found else None


def use_lock(latest: bool, lock: Path = LOCK, python: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Install from the lock unless ``--latest`` was given or the lock was made with another Python."""
    made_with = lock_python(lock)
    if latest or made_with is None:
        return False
    if made_with != f"{python[0]}.{python[1]}":
        print(f"{lock.name} was made with Python {made_with}, this is {python[0]}.{python[1]}: installing the newest "
              f"releases the floors allow instead", flush=True)
        return False
    return True


def install_command(python: Path, locked: bool, lock: Path = LOCK) -> list[str]:
    """The pip command that installs the project (editable, with the test extra) into the environment."""
    command = [str(python), "-m", "pip", "install", "-e", f"{ROOT}[test]"]
    return [*command, "--constraint", str(lock)] if locked else [*command, "--upgrade", "--upgrade-strategy", "eager"]


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


def run_command(command: str, rest: list[str], python: Path = PYTHON) -> list[str]:
    """What ``python dev.py <command> <rest>`` runs inside the environment.

    Raises:
        ValueError: an unknown task or example (the message lists the known ones).
    """
    if command == "test":  # pytest keeps the last -n given, so `-n 0` after these runs in one process
        parallel = [] if any("no:xdist" in arg for arg in rest) else PARALLEL
        return [str(python), "-m", "pytest", *parallel, *rest]
    if command == "lock":
        return [str(python), "-m", "pip", "freeze", "--exclude-editable", *rest]
    if command == "example":
        if not rest:
            raise ValueError(f"name the example: python dev.py example <name> [args]; one of "
                             f"{', '.join(_scripts('examples'))}")
        return [str(python), str(_script("examples", rest[0])), *rest[1:]]
    try:
        return [str(python), str(_script("tasks", command)), *rest]
    except ValueError as error:
        raise ValueError(f"{error}; or 'test', 'lock', or 'example <name>'") from None


def parse(argv: list[str]) -> tuple[bool, str | None, list[str]]:
    """(``--latest`` given, command, its arguments); ``--latest`` counts only before the command."""
    latest = bool(argv) and argv[0] == LATEST
    rest = argv[1:] if latest else argv
    return latest, (rest[0] if rest else None), rest[1:]


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_environment(latest: bool) -> None:
    """Create ``.venv`` and install the project unless the stamp says it is current."""
    locked = use_lock(latest)
    sources = (ROOT / "pyproject.toml").read_bytes() + (LOCK.read_bytes() if locked else b"latest")
    wanted = hashlib.sha256(sources).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating the virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    _run([str(PYTHON), "-m", "pip", "install", "--upgrade", "pip"])
    _run(install_command(PYTHON, locked))
    STAMP.write_text(wanted)


def write_lock(frozen: str) -> None:
    """``constraints.txt`` from ``pip freeze`` output, with the header ``use_lock`` reads."""
    header = (f"# The versions the test suite passed with (python dev.py lock), made with\n"
              f"# python: {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform}. python dev.py installs them; "
              f"--latest does not.\n")
    LOCK.write_text(header + "".join(line + "\n" for line in frozen.splitlines() if line and not line.startswith("#")))


def main(argv: list[str]) -> int:
    latest, command, rest = parse(argv)
    if command is None or command in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        cmd = run_command(command, rest)  # an unknown name is reported before anything is installed
    except ValueError as error:
        print(error)
        return 2
    ensure_environment(latest)
    print("+", " ".join(cmd), flush=True)
    if command == "lock":
        write_lock(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
        print(f"wrote {LOCK}")
        return 0
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
