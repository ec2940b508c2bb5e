import pytest

from blocks.rl.modes import ModeScheduler


def test_single_mode_schedules():
    assert ModeScheduler("long_only").modes(step=3, num_prompts=3) == ["long"] * 3
    assert ModeScheduler("short_only").modes(step=3, num_prompts=2) == ["short"] * 2


def test_hybrid_is_a_seeded_per_prompt_draw_that_a_resumed_run_repeats():
    scheduler = ModeScheduler("hybrid", seed=1)
    first = scheduler.modes(step=7, num_prompts=64)
    assert ModeScheduler("hybrid", seed=1).modes(step=7, num_prompts=64) == first  # no state to restore
    assert scheduler.modes(step=8, num_prompts=64) != first
    assert ModeScheduler("hybrid", seed=2).modes(step=7, num_prompts=64) != first
    assert set(first) == {"long", "short"}


def test_hybrid_long_fraction():
    draws = [m for step in range(100) for m in ModeScheduler("hybrid", 0.5).modes(step, 40)]
    assert abs(draws.count("long") / len(draws) - 0.5) < 0.03  # 4000 draws: SE 0.008
    quarter = [m for step in range(100) for m in ModeScheduler("hybrid", 0.25).modes(step, 40)]
    assert abs(quarter.count("long") / len(quarter) - 0.25) < 0.03
    assert set(ModeScheduler("hybrid", 0.0).modes(0, 50)) == {"short"}
    assert set(ModeScheduler("hybrid", 1.0).modes(0, 50)) == {"long"}


def test_samples_share_their_prompts_mode():
    assert ModeScheduler.per_sample(["long", "short"], 3) == ["long"] * 3 + ["short"] * 3


@pytest.mark.parametrize("kwargs", [{"schedule": "mixed"}, {"long_fraction": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ModeScheduler(**kwargs)
