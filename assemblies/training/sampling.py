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

    With ``max_tokens``, a batch is filled by token budget instead of count: samples are drawn until
    the next one would push the padded size (longest x count, from each corpus's typical length
    ``corpus_tokens``) past the budget, so video-heavy batches hold fewer samples than image batches.

    Args:
        sizes: length of each corpus (indices ``offset[k] .. offset[k] + sizes[k] - 1`` in the concat).
        weights: relative sampling weight per corpus (normalised here).
        batch_size: samples per batch (the cap when ``max_tokens`` is set).
        num_batches: batches in the stage (the sampler's full length).
        seed: stage seed.
        rank, world_size: data-parallel position.
        start_step: first batch to yield (resume); ``len()`` stays ``num_batches``.
        max_tokens: padded-token budget per batch (None: exactly ``batch_size`` samples).
        corpus_tokens: typical tokens per sample of each corpus (needed with ``max_tokens``).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, num_batches: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0,
                 max_tokens: int | None = None, corpus_tokens: Sequence[int] | None = None) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per corpus: sizes={list(sizes)} weights={list(weights)}")
        if any(n <= 0 for n in sizes) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"corpora must be non-empty and weights non-negative: sizes={list(sizes)} weights={list(weights)}")
        self.sizes = np.asarray(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.probs = np.asarray(weights, dtype=float) / sum(weights)
        self.batch_size, self.num_batches = batch_size, num_batches
        self.seed, self.rank, self.world_size, self.start_step = seed, rank, world_size, start_step
        if max_tokens is not None and (corpus_tokens is None or len(corpus_tokens) != len(sizes)):
            raise ValueError("max_tokens needs corpus_tokens: one typical length per corpus")
        self.max_tokens = max_tokens
        self.corpus_tokens = np.asarray(corpus_tokens if corpus_tokens is not None else [1] * len(sizes))

    def _corpora(self, rng: np.random.Generator) -> np.ndarray:
        """Corpus of each sample of one batch: ``batch_size`` draws, or as many as the budget admits."""
        if self.max_tokens is None:
            return rng.choice(len(self.sizes), size=self.batch_size, p=self.probs)
        # Draw a generous pool at once (one RNG call keeps the stream simple), keep the prefix that fits.
        pool = rng.choice(len(self.sizes), size=self.batch_size, p=self.probs)
        longest = np.maximum.accumulate(self.corpus_tokens[pool])
        fits = longest * np.arange(1, len(pool) + 1) <= self.max_tokens
        return pool[: max(1, int(fits.sum()))]  # the padded size only grows, so `fits` is a prefix

    def batch(self, step: int) -> list[int]:
        """The indices of batch ``step`` for this rank."""
        rng = np.random.default_rng([self.seed, step, self.rank, self.world_size])
        corpora = self._corpora(rng)
        items = rng.integers(0, self.sizes[corpora])
        return (self.offsets[corpora] + items).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batch(step) for step in range(self.start_step, self.num_batches))

    def __len__(self) -> int:
        # The whole stage, also when resuming: Lightning's mid-epoch restart adds the batches already
        # done to those it fetches, and would end the epoch early (then replay it) on a shorter length.
        return self.num_batches
