"""A weighted mixture of corpora, sampled per step so a resumed run sees exactly the same batches.

Batch ``s`` of rank ``r`` depends only on ``(seed, s, r)``: no epoch bookkeeping, no shuffled index
list to restore. Resuming at step ``s`` is ``start_step=s``; data-parallel ranks draw disjoint
random streams, so no ``DistributedSampler`` is needed (Lightning's is switched off in the trainer
config).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class MixtureBatchSampler(Sampler[list[int]]):
    """Batches of indices into the concatenation of corpora of ``sizes``, corpora drawn by ``weights``.

    Args:
        sizes: length of each corpus (indices ``offset[k] .. offset[k] + sizes[k] - 1`` in the concat).
        weights: relative sampling weight per corpus (normalised here).
        batch_size: samples per batch.
        num_batches: batches in the stage (the sampler's full length).
        seed: stage seed.
        rank, world_size: data-parallel position.
        start_step: first batch to yield (resume).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, num_batches: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per corpus: sizes={list(sizes)} weights={list(weights)}")
        if any(n <= 0 for n in sizes) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"corpora must be non-empty and weights non-negative: sizes={list(sizes)} weights={list(weights)}")
        self.sizes = np.asarray(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.probs = np.asarray(weights, dtype=float) / sum(weights)
        self.batch_size, self.num_batches = batch_size, num_batches
        self.seed, self.rank, self.world_size, self.start_step = seed, rank, world_size, start_step

    def batch(self, step: int) -> list[int]:
        """The indices of batch ``step`` for this rank."""
        rng = np.random.default_rng([self.seed, step, self.rank, self.world_size])
        corpora = rng.choice(len(self.sizes), size=self.batch_size, p=self.probs)
        items = rng.integers(0, self.sizes[corpora])
        return (self.offsets[corpora] + items).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batch(step) for step in range(self.start_step, self.num_batches))

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_step)
