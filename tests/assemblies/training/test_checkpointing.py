"""Checkpoint files: atomic writes, the previous checkpoint kept, a damaged one refused in its favour."""

from __future__ import annotations

import logging

import pytest
import torch

from assemblies.training.checkpointing import AtomicCheckpointIO, atomic_path, resume_checkpoint


def _state(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.arange(50_000, dtype=torch.float32) + step}}


@pytest.fixture
def saved(tmp_path):
    """last.ckpt at step 2 after a save at step 1 (kept as last.ckpt.prev)."""
    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_state(1), last)
    io.save_checkpoint(_state(2), last)
    return io, last


def test_a_save_keeps_the_replaced_checkpoint_and_leaves_no_partial_file(saved):
    io, last = saved
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.ckpt.prev"]
    assert io.load_checkpoint(last)["global_step"] == 2
    assert torch.load(last.parent / "last.ckpt.prev", weights_only=True)["global_step"] == 1


def test_a_save_that_fails_midway_leaves_the_old_checkpoint_whole(saved):
    io, last = saved
    with pytest.raises(Exception):
        io.save_checkpoint({"global_step": 3, "bad": lambda: None}, last)  # cannot be pickled
    assert io.load_checkpoint(last)["global_step"] == 2
    assert not (last.parent / "last.ckpt.tmp").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_last_checkpoint_is_refused_and_the_previous_one_used(saved, damage, caplog):
    io, last = saved
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # inside the tensor data: torch.load alone would return wrong numbers
    last.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        state = io.load_checkpoint(last)
    assert state["global_step"] == 1 and torch.equal(state["state_dict"]["w"], _state(1)["state_dict"]["w"])
    assert f"refusing checkpoint {last}: it is truncated or corrupt" in caplog.text
    assert "resuming from the previous checkpoint" in caplog.text
    # Set aside, so the next save does not keep the damaged file as the previous checkpoint.
    assert (last.parent / "last.ckpt.corrupt").is_file() and not last.exists()
    io.save_checkpoint(_state(3), last)
    assert torch.load(last.parent / "last.ckpt.prev", weights_only=True)["global_step"] == 1


def test_no_whole_checkpoint_is_a_clear_error(saved):
    io, last = saved
    for path in (last, last.parent / "last.ckpt.prev"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RuntimeError, match=r"no usable checkpoint to resume from .*last.ckpt: BadZipFile.*"
                                           r"last.ckpt.prev: BadZipFile.*delete .*checkpoints to train the stage"):
        io.load_checkpoint(last)


def test_resume_picks_the_previous_checkpoint_when_a_kill_fell_between_the_renames(saved, tmp_path):
    io, last = saved
    assert resume_checkpoint(last.parent) == str(last)
    last.unlink()  # the state between the renames "last -> last.prev" and "tmp -> last"
    assert resume_checkpoint(last.parent) == str(last.parent / "last.ckpt.prev")
    assert io.load_checkpoint(resume_checkpoint(last.parent))["global_step"] == 1
    assert resume_checkpoint(tmp_path / "nowhere") is None


def test_atomic_path_replaces_whole_files_only(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as partial:
            partial.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and not partial.exists()
    with atomic_path(target) as partial:
        partial.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


@pytest.mark.slow
def test_a_stage_validated_only_at_its_end_still_writes_last_ckpt_on_schedule(fast_cfg, tmp_path):
    from assemblies.training.pipeline import train

    train(fast_cfg("pipeline.stages=[stage3]", "stages.stage3.max_steps=4", "stages.stage3.init_from=none",
                   "stages.stage3.max_tokens=200", "callbacks.model_checkpoint.every_n_train_steps=2",
                   "pipeline.export=false"))
    checkpoints = tmp_path / "stage3" / "checkpoints"
    # The save at step 2 (kept as .prev when step 4's replaced it) happened before the only validation.
    assert torch.load(checkpoints / "last.ckpt.prev", weights_only=True)["global_step"] == 2
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 4
