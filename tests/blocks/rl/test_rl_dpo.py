import math

import pytest
import torch

from blocks.rl.dpo import dpo_loss


def sigmoid_loss(x):
    return -math.log(1 / (1 + math.exp(-x)))


def test_dpo_by_hand():
    out = dpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]), beta=0.1)
    # chosen reward 0.1 * (-10 + 11) = 0.1, rejected 0.1 * (-12 + 11) = -0.1
    assert out.loss.item() == pytest.approx(sigmoid_loss(0.2))
    assert out.stats["chosen_reward"].item() == pytest.approx(0.1)
    assert out.stats["rejected_reward"].item() == pytest.approx(-0.1)
    assert out.stats["margin"].item() == pytest.approx(0.2) and out.stats["accuracy"].item() == 1.0


def test_policy_equal_to_reference_gives_log_2_and_the_gradient_prefers_chosen():
    chosen = torch.tensor([-5.0, -7.0], requires_grad=True)
    rejected = torch.tensor([-6.0, -3.0], requires_grad=True)
    out = dpo_loss(chosen, rejected, chosen.detach(), rejected.detach(), beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(2))
    out.loss.backward()
    # d/dchosen = -beta * sigmoid(0) / B = -0.025 per pair; rejected the opposite
    assert chosen.grad.tolist() == pytest.approx([-0.025, -0.025])
    assert rejected.grad.tolist() == pytest.approx([0.025, 0.025])


def test_length_normalised_and_sft_term():
    pc, pr, rc, rr = torch.tensor([-10.0]), torch.tensor([-8.0]), torch.tensor([-12.0]), torch.tensor([-8.0])
    nc, nr = torch.tensor([5]), torch.tensor([2])
    out = dpo_loss(pc, pr, rc, rr, beta=0.5, chosen_tokens=nc, rejected_tokens=nr, length_normalise=True)
    # per token: chosen -2 vs ref -2.4 -> 0.5 * 0.4 = 0.2; rejected -4 vs -4 -> 0
    assert out.loss.item() == pytest.approx(sigmoid_loss(0.2))
    with_sft = dpo_loss(pc, pr, rc, rr, beta=0.5, chosen_tokens=nc, rejected_tokens=nr, length_normalise=True,
                        sft_weight=0.5)
    assert with_sft.stats["sft"].item() == pytest.approx(2.0)          # -(-10) / 5 tokens
    assert with_sft.loss.item() == pytest.approx(sigmoid_loss(0.2) + 0.5 * 2.0)


def test_missing_lengths_are_refused():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="length_normalise"):
        dpo_loss(x, x, x, x, length_normalise=True)
    with pytest.raises(ValueError, match="SFT"):
        dpo_loss(x, x, x, x, sft_weight=1.0)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
