import logging
import math

import pytest
import torch

from blocks.rl.reward_combiner import RewardCombiner, RewardComponent, build_components
from blocks.rl.rewards import Rollout, build_reward

PAPER = {"accuracy": {}, "format": {}, "repetition": {"n": 2, "limit": 3},
         "rm": {"given": True, "weight": 0.5, "standardise": True}}


def test_paper_formula_by_hand():
    rollouts = [Rollout("ok\n</think>\n\n3", "long", "3"), Rollout("ok\n</think>\n\n4", "long", "3"),
                Rollout("x x x x", "short", "3"), Rollout("3", "short", "3")]
    batch = RewardCombiner(build_components(PAPER))(rollouts, group_size=2, given={"rm": [2.0, 0.0, None, 5.0]})
    # group 1: rm (2, 0) -> mean 1, unbiased std sqrt(2) -> +-1/sqrt(2); group 2: one rm score -> 0
    z = 1 / math.sqrt(2)
    assert batch.total.tolist() == pytest.approx([1 + 0.5 * z, -0.5 * z, -1.0, 1.0], abs=1e-5)
    assert batch.values["accuracy"] == [1.0, 0.0, 0.0, 1.0]
    assert batch.values["repetition"] == [0.0, 0.0, -1.0, 0.0]
    assert batch.values["rm"] == [2.0, 0.0, None, 5.0]          # raw values are kept for logging
    assert batch.valid.all() and batch.failures == {"accuracy": 0, "format": 0, "repetition": 0, "rm": 0}
    summary = batch.summary(["long", "long", "short", "short"])
    assert summary["reward/accuracy/long"] == 0.5 and summary["reward/repetition/short"] == -0.5
    assert summary["reward/total/short"] == pytest.approx(0.0) and summary["reward/unscored"] == 0


def test_a_raising_reward_is_counted_and_logged_not_fatal(caplog):
    def fragile(rollout):
        if rollout.text == "boom":
            raise RuntimeError("verifier crashed")
        return 1.0

    combiner = RewardCombiner([RewardComponent("fragile", fn=fragile),
                               RewardComponent("format", fn=build_reward("format"))])
    with caplog.at_level(logging.WARNING):
        batch = combiner([Rollout("a", "short"), Rollout("boom", "short"), Rollout("c", "short"),
                          Rollout("d", "short")], group_size=2)
    assert batch.failures == {"fragile": 1, "format": 0}
    assert batch.valid.tolist() == [True, False, True, True]
    assert batch.total.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert batch.values["fragile"][1] is None and batch.values["format"][1] == 0.0
    assert "'fragile' failed on sample 1" in caplog.text and "verifier crashed" in caplog.text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.0", torch.ones(2)])
def test_a_non_number_is_a_failure(bad):
    batch = RewardCombiner([RewardComponent("odd", fn=lambda r: bad if r.text == "x" else 0.5)])(
        [Rollout("x", "short"), Rollout("y", "short")], group_size=2)
    assert batch.failures["odd"] == 1 and batch.valid.tolist() == [False, True]


def test_given_values_are_checked_too():
    combiner = RewardCombiner([RewardComponent("rlpr")])
    batch = combiner([Rollout("a", "long")] * 2, 2, given={"rlpr": [0.3, float("nan")]})
    assert batch.failures["rlpr"] == 1 and batch.total.tolist() == pytest.approx([0.3, 0.0])


def test_a_sample_no_reward_applies_to_is_skipped_and_counted():
    batch = RewardCombiner(build_components({"accuracy": {}}))(
        [Rollout("3", "short", "3"), Rollout("3", "short", None)], group_size=2)
    assert batch.unscored == 1 and batch.valid.tolist() == [True, False]


def test_weights_and_errors():
    combiner = RewardCombiner(build_components({"accuracy": {"weight": 2.0}, "rlpr": {"given": True, "weight": 0.5}}))
    rollouts = [Rollout("r\n</think>\n\n3", "long", "3"), Rollout("r\n</think>\n\nParis", "long", "Paris",
                                                                  {"verifier": "rlpr"})]
    assert combiner(rollouts, 2, given={"rlpr": [None, 0.4]}).total.tolist() == pytest.approx([2.0, 0.2])
    with pytest.raises(ValueError, match="given by the caller"):
        combiner(rollouts, 2)
    with pytest.raises(ValueError, match="do not split"):
        combiner(rollouts, 3, given={"rlpr": [None, 0.4]})
    with pytest.raises(ValueError, match="unexpected options"):
        build_components({"rm": {"given": True, "n": 3}})
    with pytest.raises(ValueError, match="unique"):
        RewardCombiner([RewardComponent("a"), RewardComponent("a")])


def test_a_failed_sample_does_not_shift_its_groups_standardisation():
    def acc(rollout):
        if rollout.text == "boom":
            raise ValueError("bad")
        return 0.0

    combiner = RewardCombiner([RewardComponent("acc", fn=acc), RewardComponent("rm", standardise=True)])
    batch = combiner([Rollout(t, "short") for t in ("a", "b", "boom")], 3, given={"rm": [1.0, 3.0, 100.0]})
    assert batch.total.tolist() == pytest.approx([-(2 ** -0.5), 2 ** -0.5, 0.0], abs=1e-5)  # 100 is left out
