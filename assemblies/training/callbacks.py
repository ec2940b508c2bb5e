"""Callbacks: throughput (tokens/s on the progress bar, next to loss and Lightning's ETA) and peak memory."""

from __future__ import annotations

import resource
import sys
import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from blocks.batch import MultimodalBatch


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, resident-set peak on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class Throughput(Callback):
    """Logs ``train/tokens_per_s`` (LLM tokens incl. visual placeholders) and keeps run totals.

    The first ``skip`` batches are left out of the totals (they include one-off start-up costs)
    unless the stage has no others. ``summary()`` gives tokens/s, LLM tokens per sample and peak
    memory for the stage report.
    """

    def __init__(self, skip: int = 2) -> None:
        self.skip = skip
        self.batches = 0
        # [tokens, samples, seconds] of the first `skip` batches and of the rest
        self.warmup, self.steady = [0, 0, 0.0], [0, 0, 0.0]
        self._started = 0.0
        self._peak_mb = 0.0

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
        self._peak_mb = peak_memory_mb(pl_module.device)

    def summary(self) -> dict[str, float]:
        tokens, samples, seconds = self.steady if self.steady[1] else self.warmup
        return {"tokens_per_s": tokens / seconds if seconds else float("nan"),
                "tokens_per_sample": tokens / samples if samples else float("nan"),
                "peak_memory_mb": self._peak_mb}
