import math

import pytest
import torch

from blocks.rl.policy_loss import clipped_policy_loss

MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
ADV = torch.tensor([2.0, -1.0])


def first_update(aggregation="token-mean", **kwargs):
    logprobs = torch.log(torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.4, 0.6]])).requires_grad_()
    out = clipped_policy_loss(logprobs, logprobs.detach(), ADV, MASK, aggregation=aggregation, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    return out, grad


def test_first_update_is_the_plain_policy_gradient():
    out, grad = first_update()
    assert out.loss.item() == pytest.approx(-(2 + 2 - 1) / 3)             # ratio 1 everywhere
    assert grad.flatten().tolist() == pytest.approx([-2 / 3, -2 / 3, 0.0, 1 / 3, 0.0, 0.0])
    assert out.stats["ratio_mean"].item() == 1.0 and out.stats["approx_kl"].item() == 0.0
    assert out.stats["clip_fraction_low"].item() == out.stats["clip_fraction_high"].item() == 0.0


def test_aggregations_by_hand():
    # per-token losses at ratio 1: row 1 (-2, -2), row 2 (+1)
    assert first_update("seq-mean-token-mean")[0].loss.item() == pytest.approx((-2 + 1) / 2)
    assert first_update("seq-mean-token-sum-norm", max_length=4)[0].loss.item() == pytest.approx(-3 / (2 * 4))
    assert first_update("seq-mean-token-sum-norm")[0].loss.item() == pytest.approx(-3 / (2 * 3))
    with pytest.raises(ValueError, match="aggregation"):
        first_update("sum")


def test_dropped_samples_leave_the_loss():
    out, grad = first_update(sample_mask=torch.tensor([True, False]))
    assert out.loss.item() == pytest.approx(-2.0) and grad[1].abs().sum() == 0
    assert out.stats["active_tokens"].item() == 2


def test_micro_batches_with_the_whole_batch_denominator_add_up():
    logprobs = torch.randn(4, 5)
    old = logprobs + 0.3 * torch.randn(4, 5)
    adv, mask = torch.randn(4), (torch.rand(4, 5) > 0.3).long()
    for aggregation in ("token-mean", "seq-mean-token-mean"):
        whole = clipped_policy_loss(logprobs, old, adv, mask, aggregation=aggregation).loss
        n = mask.sum() if aggregation == "token-mean" else (mask.sum(1) > 0).sum()
        parts = sum(clipped_policy_loss(logprobs[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2],
                                        aggregation=aggregation, denominator=n).loss for i in (0, 2))
        assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_clipping_low_and_high():
    old = torch.zeros(1, 4)
    # ratios 1.5 (A > 0: clipped at 1.28, no gradient), 0.5 (A < 0 on row 2: clipped at 0.8)
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.0]])).requires_grad_()
    out = clipped_policy_loss(logprobs, old, torch.tensor([1.0]), torch.ones(1, 4))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    assert out.loss.item() == pytest.approx(-(1.28 + 0.5 + 1.1 + 1.0) / 4)
    assert grad.flatten().tolist() == pytest.approx([0.0, -0.5 / 4, -1.1 / 4, -1.0 / 4])  # d(-r A)/d log r = -r A
    assert out.stats["clip_fraction_high"].item() == 0.25 and out.stats["clip_fraction_low"].item() == 0.0

    neg = clipped_policy_loss(logprobs, old, torch.tensor([-1.0]), torch.ones(1, 4))
    (grad,) = torch.autograd.grad(neg.loss, logprobs)
    assert neg.loss.item() == pytest.approx((1.5 + 0.8 + 1.1 + 1.0) / 4)
    assert grad.flatten().tolist() == pytest.approx([1.5 / 4, 0.0, 1.1 / 4, 1.0 / 4])
    assert neg.stats["clip_fraction_low"].item() == 0.25 and neg.stats["clip_fraction_high"].item() == 0.0
    assert out.stats["approx_kl"].item() == pytest.approx(
        sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.1, 1.0)) / 4)


def test_garbage_at_masked_positions_does_not_leak():
    logprobs = torch.tensor([[-1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -torch.inf]])
    out = clipped_policy_loss(logprobs, old, torch.tensor([1.0]), torch.tensor([[1, 0]]))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all() and grad[0, 1] == 0
    with pytest.raises(ValueError, match="shapes"):
        clipped_policy_loss(logprobs, old, torch.tensor([1.0, 2.0]), torch.tensor([[1, 0]]))
