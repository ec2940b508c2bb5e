"""``kill -9`` of a real training process, three times: at a random step, while a checkpoint is being
written, and then with its ``last.ckpt`` truncated. Each time the same command again resumes, and the
run ends with the weights of one that was never interrupted, bit for bit (CPU, one thread)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[3]
COMMAND = [sys.executable, str(ROOT / "tasks" / "train.py"), "+assembly=mcpv45", "scale=tiny", "+debug=fast",
           "data.heldout=[digits]", "data.heldout_size=4", "pipeline.plots=false", "logger=csv",
           "pipeline.stages=[stage3]", "stages.stage3.max_steps=12", "stages.stage3.batch_size=2",
           "stages.stage3.init_from=none", "stages.stage3.max_tokens=200",
           "callbacks.model_checkpoint.every_n_train_steps=2", "pipeline.export=false", "threads=1"]
TIMEOUT = 900


def _start(run_dir: Path, attempt: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / f"{attempt}.log", "w")  # a file, not a pipe: a killed child cannot block on it
    return subprocess.Popen([*COMMAND, f"paths.output_dir={run_dir}", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(process: subprocess.Popen, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert process.poll() is None, f"the run ended (code {process.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting to kill the run"
        time.sleep(0.0005)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def _step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"])


def _saves(last: Path) -> Callable[[], int]:
    """A counter of the checkpoints written to ``last`` so far (each save is a new file by rename)."""
    seen: list[tuple[int, int]] = []

    def count() -> int:
        try:
            stamp = (last.stat().st_ino, last.stat().st_mtime_ns)
        except FileNotFoundError:
            return len(seen)
        if not seen or seen[-1] != stamp:
            seen.append(stamp)
        return len(seen)
    return count


def _kill_at_a_random_step(run_dir: Path, rng: random.Random) -> int:
    """Kill after checkpoint 2 or 3 plus a random part of a checkpoint interval; returns the step it resumes at."""
    last = run_dir / "stage3" / "checkpoints" / "last.ckpt"
    process, saves = _start(run_dir, "killed_at_random"), _saves(last)
    target = rng.choice([2, 3])
    _wait_for(process, lambda: saves() >= target - 1)
    before = time.monotonic()
    _wait_for(process, lambda: saves() >= target)
    time.sleep(rng.uniform(0.1, 0.9) * (time.monotonic() - before))
    _kill(process)
    return _step(last)


def _kill_while_writing(run_dir: Path) -> None:
    """Stop the run when a checkpoint's temporary file appears; kill it if it is still being written."""
    last = run_dir / "stage3" / "checkpoints" / "last.ckpt"
    partial = last.with_name("last.ckpt.tmp")
    process = _start(run_dir, "killed_while_writing")
    while True:
        _wait_for(process, partial.exists)
        os.kill(process.pid, signal.SIGSTOP)
        if partial.exists() and last.exists():  # frozen while writing, before either rename
            break
        os.kill(process.pid, signal.SIGCONT)  # the rename won the race; catch the next save
        _wait_for(process, lambda: not partial.exists())
    _kill(process)


def _finish(run_dir: Path) -> str:
    process = _start(run_dir, "finished")
    assert process.wait(timeout=TIMEOUT) == 0, (run_dir / "finished.log").read_text()[-3000:]
    return (run_dir / "finished.log").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two processes at once: never beside another such test
def test_killed_runs_resume_to_the_weights_of_an_uninterrupted_one(tmp_path):
    rng = random.Random(16)
    straight = _start(tmp_path / "straight", "finished")  # alongside: one thread each

    chain, stage = tmp_path / "killed", tmp_path / "killed" / "stage3"
    resumed_at = _kill_at_a_random_step(chain, rng)
    assert 2 <= resumed_at < 12 and not (stage / "model.safetensors").exists()

    _kill_while_writing(chain)
    checkpoints = stage / "checkpoints"
    assert (checkpoints / "last.ckpt.tmp").is_file()  # a half-written checkpoint was left behind ...
    complete = _step(checkpoints / "last.ckpt")  # ... and last.ckpt is the whole one before it
    assert complete >= resumed_at and _step(checkpoints / "last.ckpt.prev") == complete - 2

    before_last = torch.load(checkpoints / "last.ckpt.prev", weights_only=True)["state_dict"]
    last = checkpoints / "last.ckpt"  # a damaged last.ckpt, as a non-atomic writer or a disk would leave it
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    log = _finish(chain)
    assert "refusing checkpoint" in log and "truncated or corrupt" in log
    assert "resuming from the previous checkpoint" in log

    assert straight.wait(timeout=TIMEOUT) == 0, (tmp_path / "straight" / "finished.log").read_text()[-3000:]
    expected = load_file(tmp_path / "straight" / "stage3" / "model.safetensors")
    got = load_file(stage / "model.safetensors")
    assert expected.keys() == got.keys()
    different = [key for key in expected if not torch.equal(expected[key], got[key])]
    assert not different, f"{len(different)} tensors differ after three kills, e.g. {different[:3]}"
    # Not vacuous: the steps after the checkpoint it resumed from moved the weights.
    assert not torch.equal(before_last["model.llm.lm_head.weight"], got["llm.lm_head.weight"])
