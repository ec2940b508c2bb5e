"""Callbacks: throughput (tokens/s on the progress bar, samples/s), peak memory per stage, gradient norm;
and the switch that keeps Lightning's repeated tips and notices out of a run's output."""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
import warnings

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.distributed.fsdp import FullyShardedDataParallel

from blocks.batch import MultimodalBatch

_STATM = "/proc/self/statm"


def _rss_bytes() -> int:
    """The resident set size of this process now (Linux ``/proc``)."""
    with open(_STATM) as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory between ``start()`` and ``stop()`` (MB), and how it was measured (``method``).

    GPU: the CUDA allocator's peak, reset at ``start``. CPU on Linux: the resident set size of this
    process sampled every ``interval`` seconds by a thread (data-loader worker processes excluded; a
    spike shorter than the interval can be missed). Elsewhere: the process's lifetime peak RSS.
    """

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device, self.interval = device, interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated, reset per stage"
        elif os.path.exists(_STATM):
            self.method = f"process RSS sampled every {interval * 1000:.0f} ms during the stage (workers excluded)"
        else:
            self.method = "process lifetime peak RSS (getrusage)"

    def start(self) -> None:
        self._stop.clear()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif os.path.exists(_STATM):
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def stop(self) -> float:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.peak_mb = max(self._peak, _rss_bytes()) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
        return self.peak_mb


class Throughput(Callback):
    """Logs ``train/tokens_per_s`` (LLM tokens incl. visual placeholders) and keeps stage totals.

    The first ``skip`` batches are left out of the totals (they include one-off start-up costs)
    unless the stage has no others. ``summary()`` gives samples/s, tokens/s, LLM tokens per sample
    and the stage's peak memory (``PeakMemory``, from the start to the end of training).
    """

    def __init__(self, skip: int = 2) -> None:
        self.skip = skip
        self.batches = 0
        # [tokens, samples, seconds] of the first `skip` batches and of the rest
        self.warmup, self.steady = [0, 0, 0.0], [0, 0, 0.0]
        self._started = 0.0
        self._memory: PeakMemory | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._memory = PeakMemory(pl_module.device)
        self._memory.start()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch: MultimodalBatch | None,
                           batch_idx: int) -> None:
        if batch is None or batch.filler:
            return
        seconds = time.perf_counter() - self._started
        tokens = int(batch.attention_mask.sum())
        self.batches += 1
        totals = self.steady if self.batches > self.skip else self.warmup
        totals[0] += tokens
        totals[1] += batch.batch_size
        totals[2] += seconds
        pl_module.log("train/tokens_per_s", tokens / max(seconds, 1e-9), prog_bar=True, batch_size=batch.batch_size)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._memory is not None:
            self._memory.stop()

    def summary(self) -> dict[str, float | str | None]:
        tokens, samples, seconds = self.steady if self.steady[1] else self.warmup
        memory = self._memory
        return {"samples_per_s": samples / seconds if seconds else float("nan"),
                "tokens_per_s": tokens / seconds if seconds else float("nan"),
                "tokens_per_sample": tokens / samples if samples else float("nan"),
                "peak_memory_mb": memory.peak_mb if memory else None,
                "peak_memory_method": memory.method if memory else None}


class GradNorm(Callback):
    """Logs ``train/grad_norm``: the global L2 norm of the gradients before clipping, once per optimizer step.

    Under FSDP each rank holds the gradients of its own shards: the squared norms are summed over ranks
    (every rank joins, also one whose shards are all frozen)."""

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        norms = [p.grad.detach().float().norm() for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        sharded = isinstance(getattr(pl_module, "model", None), FullyShardedDataParallel)
        if not norms and not sharded:
            return
        squared = torch.stack(norms).square().sum() if norms else torch.zeros((), device=pl_module.device)
        if sharded:
            squared = trainer.strategy.reduce(squared, reduce_op="sum")
        pl_module.log("train/grad_norm", squared.sqrt(), on_step=True, on_epoch=False)


# Notices Lightning repeats for every stage, none of which asks the user to act.
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_QUIET_WARNINGS = (
    # MLLMModule moves its own batch type on purpose; the datamodule has no hook.
    r"You have overridden `transfer_batch_to_device` in `LightningModule`",
    # Lightning's own use of a torch API deprecated in torch 2.9.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def quiet_lightning() -> None:
    """Silence Lightning's per-trainer info lines (GPU/TPU available, the litlogger tip, "max_steps
    reached", ...) and the warnings above. Lightning's real warnings still show."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
