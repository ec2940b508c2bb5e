"""The per-step mixture sampler: weights respected, deterministic, resumable, rank-disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from assemblies.training.sampling import MixtureBatchSampler


def test_mixture_follows_weights_and_stays_in_range():
    sampler = MixtureBatchSampler([100, 1000], [0.8, 0.2], batch_size=50, num_batches=40, seed=1)
    indices = np.concatenate(list(sampler))
    assert indices.min() >= 0 and indices.max() < 1100
    assert (indices < 100).mean() == pytest.approx(0.8, abs=0.03)


def test_resume_yields_the_remaining_batches_exactly():
    full = list(MixtureBatchSampler([10, 20], [1, 1], batch_size=4, num_batches=8, seed=3))
    tail = list(MixtureBatchSampler([10, 20], [1, 1], batch_size=4, num_batches=8, seed=3, start_step=5))
    assert tail == full[5:] and len(tail) == 3


def test_ranks_and_seeds_draw_different_batches():
    a = MixtureBatchSampler([1000], [1], 8, 4, seed=0, rank=0, world_size=2).batch(0)
    b = MixtureBatchSampler([1000], [1], 8, 4, seed=0, rank=1, world_size=2).batch(0)
    c = MixtureBatchSampler([1000], [1], 8, 4, seed=1, rank=0, world_size=2).batch(0)
    assert a != b and a != c


def test_bad_mixture_is_rejected():
    with pytest.raises(ValueError, match="one weight per corpus"):
        MixtureBatchSampler([10, 10], [1.0], 2, 2)
    with pytest.raises(ValueError, match="non-empty"):
        MixtureBatchSampler([0], [1.0], 2, 2)


def test_token_budget_fills_batches_by_padded_length():
    # Corpus 0: 40-token samples, corpus 1: 400-token videos. Budget 800 padded tokens, cap 32 samples.
    sampler = MixtureBatchSampler([100, 100], [0.5, 0.5], batch_size=32, num_batches=50, seed=0,
                                  max_tokens=800, corpus_tokens=[40, 400])
    for batch in sampler:
        lengths = [40 if i < 100 else 400 for i in batch]
        assert max(lengths) * len(lengths) <= 800 or len(batch) == 1
        assert len(batch) <= 20
    only_images = MixtureBatchSampler([100, 100], [1.0, 0.0], batch_size=32, num_batches=3, max_tokens=800,
                                      corpus_tokens=[40, 400])
    assert all(len(b) == 20 for b in only_images)  # 20 x 40 = 800
    with pytest.raises(ValueError, match="corpus_tokens"):
        MixtureBatchSampler([10], [1.0], 2, 2, max_tokens=100)
