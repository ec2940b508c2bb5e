"""A weighted mixture of corpora, sampled per step so a resumed run sees exactly the same batches.

Batch ``s`` of rank ``r`` depends only on ``(seed, s, r)``: no epoch bookkeeping, no shuffled index
list to restore. Resuming at step ``s`` is ``start_step=s``; data-parallel ranks draw disjoint
random streams, so no ``DistributedSampler`` is needed (Lightning's is switched off in the trainer
config).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

from blocks.data.batching import budget_prefix


class MixtureBatchSampler(Sampler[list[int]]):
    """Batches of indices into the concatenation of corpora of ``sizes``, corpora drawn by ``weights``.

    Every step draws ``batch_size`` samples (a corpus by weight, then an item of it). With
    ``max_tokens`` the batch keeps the longest prefix of those draws whose padded size (longest real
    length x count, ``blocks.data.batching.budget_prefix``) fits the budget, so no batch exceeds it
    (a single sample longer than the budget is a batch of its own). The lengths are the real token
    counts of the drawn items (``set_lengths``; ``candidates`` lists which items need one). When the
    budget does not bind, the batches are exactly those drawn without ``max_tokens``.

    Args:
        sizes: length of each corpus (indices ``offset[k] .. offset[k] + sizes[k] - 1`` in the concat).
        weights: relative sampling weight per corpus (normalised here).
        batch_size: samples per batch (the cap when ``max_tokens`` is set).
        num_batches: batches in the stage (the sampler's full length).
        seed: stage seed.
        rank, world_size: data-parallel position.
        start_step: first batch to yield (resume); ``len()`` stays ``num_batches``.
        max_tokens: padded-token budget per batch (None: exactly ``batch_size`` samples).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, num_batches: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0,
                 max_tokens: int | None = None) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per corpus: sizes={list(sizes)} weights={list(weights)}")
        if any(n <= 0 for n in sizes) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"corpora must be non-empty and weights non-negative: sizes={list(sizes)} weights={list(weights)}")
        self.sizes = np.asarray(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.probs = np.asarray(weights, dtype=float) / sum(weights)
        self.batch_size, self.num_batches = batch_size, num_batches
        self.seed, self.rank, self.world_size, self.start_step = seed, rank, world_size, start_step
        self.max_tokens = max_tokens
        self.lengths: list[Mapping[int, int]] | None = None

    def draws(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(corpus, item inside it) of the ``batch_size`` samples drawn for batch ``step`` of this rank."""
        rng = np.random.default_rng([self.seed, step, self.rank, self.world_size])
        corpora = rng.choice(len(self.sizes), size=self.batch_size, p=self.probs)
        return corpora, rng.integers(0, self.sizes[corpora])

    def candidates(self) -> list[list[int]]:
        """Per corpus, the sorted items this rank may draw from ``start_step`` on: whose lengths are needed."""
        items: list[set[int]] = [set() for _ in self.sizes]
        for step in range(self.start_step, self.num_batches):
            for corpus, item in zip(*self.draws(step)):
                items[corpus].add(int(item))
        return [sorted(s) for s in items]

    def set_lengths(self, lengths: Sequence[Mapping[int, int]]) -> None:
        """Per corpus, item -> real token count, for at least the ``candidates``."""
        if len(lengths) != len(self.sizes):
            raise ValueError(f"need the lengths of {len(self.sizes)} corpora, got {len(lengths)}")
        self.lengths = list(lengths)

    def batch(self, step: int) -> list[int]:
        """The indices of batch ``step`` for this rank."""
        corpora, items = self.draws(step)
        if self.max_tokens is not None:
            if self.lengths is None:
                raise RuntimeError("max_tokens needs the drawn samples' lengths: call set_lengths first")
            lengths = [self.lengths[c][int(i)] for c, i in zip(corpora, items)]
            keep = budget_prefix(lengths, self.max_tokens, self.batch_size)
            corpora, items = corpora[:keep], items[:keep]
        return (self.offsets[corpora] + items).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batch(step) for step in range(self.start_step, self.num_batches))

    def __len__(self) -> int:
        # The whole stage, also when resuming: Lightning's mid-epoch restart adds the batches already
        # done to those it fetches, and would end the epoch early (then replay it) on a shorter length.
        return self.num_batches
