import math

import pytest
import torch

from blocks.rl.rewards import Rollout
from blocks.rl.rlpr import StdFilter, mean_token_probability, probability_reward, rlpr_applies, rlpr_contexts


def test_which_samples_rlpr_scores():
    assert rlpr_applies(Rollout("r</think>\n\nParis", "long", "Paris", {"verifier": "rlpr"}))
    assert not rlpr_applies(Rollout("Paris", "short", "Paris", {"verifier": "rlpr"}))  # nothing to condition on
    assert not rlpr_applies(Rollout("r</think>\n\n3", "long", "3"))                  # rule-verified
    assert not rlpr_applies(Rollout("r</think>\n\nParis", "long", None, {"verifier": "rlpr"}))


def test_contexts_keep_the_policys_reasoning_verbatim():
    contexts = rlpr_contexts("First, the sun.\n</think>\n\nParis is the capital")
    assert contexts.with_reasoning == "First, the sun.\n</think>\n\n"
    assert "<think>\n" + contexts.without_reasoning == "<think>\n\n</think>\n\n"  # the empty think block
    assert rlpr_contexts("cut off reasoning") is None     # no closed reasoning: the caller gives 0


def test_probability_reward_by_hand():
    logprobs = torch.log(torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.3, 0.4]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    score_b = mean_token_probability(logprobs, mask)
    assert score_b.tolist() == pytest.approx([0.7, 0.3])
    score_a = torch.tensor([0.5, 0.6])
    assert probability_reward(score_b, score_a).tolist() == pytest.approx([0.2, 0.0])  # clipped at 0
    assert mean_token_probability(logprobs, torch.zeros_like(mask)).tolist() == [0.0, 0.0]


def test_std_filter_ema_by_hand():
    filt = StdFilter(beta=0.5, ema_ratio=0.5, warmup_steps=2, start_step=3)
    low, high = torch.tensor([[1.0, 1.0], [0.0, 2.0]]), torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    # group stds: low -> (0, sqrt 2), high -> (sqrt 2, sqrt 2)
    s = math.sqrt(2)
    assert filt(low).all() and filt.ema is None                     # warm-up: no filtering
    assert filt(high).all() and filt.ema == pytest.approx((s / 2 + s) / 2)
    ema = filt.ema
    assert filt(torch.tensor([[1.0, 1.1], [0.0, 2.0]])).tolist() == [False, True]  # 0.07 < 0.5 * ema
    assert filt.ema == pytest.approx(0.5 * ema + 0.5 * (0.1 / s + s) / 2)


def test_std_filter_resumes_exactly():
    batches = [torch.rand(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(14)]
    whole = StdFilter()
    kept = [whole(b).tolist() for b in batches]
    first = StdFilter()
    [first(b) for b in batches[:8]]
    resumed = StdFilter()
    resumed.load_state_dict(first.state_dict())
    assert [resumed(b).tolist() for b in batches[8:]] == kept[8:]
    assert resumed.ema == whole.ema
    with pytest.raises(ValueError):
        StdFilter(warmup_steps=5, start_step=5)
