import pytest
import torch

from blocks.rl.advantages import group_advantages, group_stats, standardise_in_groups

REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # group 1 informative, group 2 all equal


def test_grpo_by_hand():
    adv = group_advantages(REWARDS, group_size=4, estimator="grpo")
    # mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    assert adv.values[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-3)
    assert adv.values[4:].tolist() == [0.0] * 4
    assert adv.keep.tolist() == [True] * 4 + [False] * 4
    assert (adv.zero_variance_groups, adv.groups, adv.zero_variance_fraction) == (1, 2, 0.5)


def test_dr_grpo_and_rloo_by_hand():
    dr = group_advantages(REWARDS, 4, "dr_grpo")
    assert dr.values[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    rloo = group_advantages(REWARDS, 4, "rloo")
    assert rloo.values[:4].tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])  # r_i - mean of the others
    assert dr.zero_variance_groups == rloo.zero_variance_groups == 1


def test_invalid_samples_are_left_out_of_their_group():
    rewards = torch.tensor([1.0, 0.0, 5.0, 0.0])
    valid = torch.tensor([True, True, False, True])
    adv = group_advantages(rewards, 4, "dr_grpo", valid=valid)
    assert adv.values.tolist() == pytest.approx([2 / 3, -1 / 3, 0.0, -1 / 3])
    assert adv.keep.tolist() == [True, True, False, True]
    rloo = group_advantages(rewards, 4, "rloo", valid=valid)
    assert rloo.values.tolist() == pytest.approx([1.0, -0.5, 0.0, -0.5])


def test_groups_without_signal_are_dropped_and_counted():
    nearly_equal = torch.tensor([0.5, 0.5 + 1e-9, 0.2, 0.9])
    assert group_advantages(nearly_equal, 2).zero_variance_groups == 1
    one_valid = group_advantages(torch.tensor([1.0, 0.0]), 2, valid=torch.tensor([True, False]))
    assert one_valid.zero_variance_groups == 1 and not one_valid.keep.any()


def test_group_statistics_and_standardisation():
    stats = group_stats(torch.tensor([[2.0, 0.0, 9.0]]), torch.tensor([[True, True, False]]))
    assert (stats.mean.item(), stats.std.item(), stats.count.item(), stats.spread.item()) == pytest.approx(
        (1.0, 2 ** 0.5, 2, 2.0))
    z = standardise_in_groups(torch.tensor([[2.0, 0.0, 9.0], [3.0, 3.0, 3.0]]),
                              torch.tensor([[True, True, False], [True, True, True]]))
    assert z.flatten().tolist() == pytest.approx([2 ** -0.5, -(2 ** -0.5), 0.0, 0.0, 0.0, 0.0], abs=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="estimator"):
        group_advantages(REWARDS, 4, "ppo")
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(REWARDS, 3)
