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


def test_token_budget_holds_for_the_real_length_of_every_drawn_sample():
    # Corpus 0: 40-token samples; corpus 1: lengths from 40 to 760 tokens, a different one per item.
    sampler = MixtureBatchSampler([100, 100], [0.5, 0.5], batch_size=32, num_batches=50, seed=0, max_tokens=800)
    lengths = [dict.fromkeys(range(100), 40), {i: 40 + 40 * (i % 19) for i in range(100)}]
    needed = sampler.candidates()
    assert set(needed[0]) <= set(range(100)) and len(needed[1]) > 50
    sampler.set_lengths(lengths)
    sizes = []
    for batch in sampler:
        real = [lengths[i >= 100][i % 100] for i in batch]
        assert max(real) * len(real) <= 800
        sizes.append(len(batch))
    assert min(sizes) < 5 and max(sizes) >= 10  # long draws shrink a batch, short ones fill it


def test_a_budget_that_never_binds_keeps_the_fixed_size_batches():
    fixed = list(MixtureBatchSampler([100, 100], [0.3, 0.7], batch_size=8, num_batches=20, seed=5))
    budget = MixtureBatchSampler([100, 100], [0.3, 0.7], batch_size=8, num_batches=20, seed=5, max_tokens=8 * 50)
    budget.set_lengths([dict.fromkeys(range(100), 50)] * 2)
    assert list(budget) == fixed
    with pytest.raises(RuntimeError, match="set_lengths"):
        list(MixtureBatchSampler([10], [1.0], 2, 2, max_tokens=100))
