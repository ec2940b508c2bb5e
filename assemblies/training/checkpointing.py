"""Crash-safe checkpoints: written on schedule and atomically, a damaged one refused for the one before.

- Schedule: Lightning 2.6's ``ModelCheckpoint`` defers every step save, ``last.ckpt`` included, until
  the monitored metric exists; a stage that validates only at its end (``val_every: 0``) then writes
  no checkpoint before it ends, and a killed run restarts the stage from step 0.
  ``ResumableModelCheckpoint`` writes ``last.ckpt`` every ``every_n_train_steps`` regardless.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in
the system temp folder; when that is another filesystem, the final move copies into ``last.ckpt``
itself, and a ``kill -9`` during the copy leaves a truncated file that the next resume fails on.

- Save: the checkpoint goes to ``<name>.tmp`` beside the target and is fsynced; the file it replaces
  is kept as ``<name>.prev``; then ``.tmp`` is renamed over the target (atomic on one filesystem).
  A kill at any moment leaves the target whole (old or new), or, between the two renames, no target
  and a whole ``.prev``, which ``resume_checkpoint`` then picks.
- Load: a checkpoint whose zip structure or CRC-32s do not check out (truncated, corrupt) is refused
  with a warning that says why, set aside as ``<name>.corrupt`` (so the next save does not keep it as
  ``.prev``), and its ``.prev`` is loaded instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)
LAST = "last.ckpt"
PARTIAL, PREVIOUS, REFUSED = ".tmp", ".prev", ".corrupt"
_CHUNK = 1 << 24


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error, the file is
    fsynced and renamed over ``path``, so readers (and a rerun after a kill) see the old file or the
    new one, never part of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _beside(target, PARTIAL)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync(partial)
    os.replace(partial, target)
    _fsync(target.parent)  # the rename itself survives a power cut


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole ``torch.save`` archive (missing, truncated, a CRC-32 that does not
    match), or None. Reads the file once; members saved without a CRC are not checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.CRC == 0:
                    continue
                with archive.open(member) as data:
                    while data.read(_CHUNK):
                        pass
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        return f"{type(error).__name__}: {error}"
    return None


def resume_checkpoint(directory: str | os.PathLike) -> str | None:
    """The checkpoint a rerun resumes from: ``last.ckpt``, or ``last.ckpt.prev`` when a kill fell between
    the two renames of a save; None when the stage has none (it starts from its beginning)."""
    last = Path(directory) / LAST
    return next((str(path) for path in (last, _beside(last, PREVIOUS)) if path.is_file()), None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic saves and a fallback to the previous checkpoint (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        with atomic_path(target) as partial:
            torch.save(checkpoint, partial)
            if target.is_file():
                os.replace(target, _beside(target, PREVIOUS))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Callable | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        target = Path(path)
        candidates = [target] if target.name.endswith(PREVIOUS) else [target, _beside(target, PREVIOUS)]
        refused = []
        for candidate in candidates:
            problem = checkpoint_problem(candidate)
            if problem is None:
                if refused:
                    log.warning("resuming from the previous checkpoint %s instead", candidate)
                return super().load_checkpoint(candidate, map_location=map_location, weights_only=weights_only)
            refused.append(f"{candidate}: {problem}")
            if candidate.is_file():
                log.warning("refusing checkpoint %s: it is truncated or corrupt (%s); set aside as %s", candidate,
                            problem, _beside(candidate, REFUSED).name)
                with contextlib.suppress(FileNotFoundError):  # another rank may have set it aside already
                    os.replace(candidate, _beside(candidate, REFUSED))
        raise RuntimeError(f"no usable checkpoint to resume from ({'; '.join(refused)}); delete {target.parent} "
                           f"to train the stage from its beginning")

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        super().remove_checkpoint(path)
        _beside(Path(path), PREVIOUS).unlink(missing_ok=True)


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` follows ``every_n_train_steps`` also while the monitored
    metric (held-out accuracy) does not exist yet; best-k checkpoints still wait for it."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self._every_n_train_steps
        if not self.save_last or every < 1 or trainer.global_step % every or self._should_skip_saving_checkpoint(trainer):
            return  # not a save step, or this step's checkpoint is written already
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
