"""Which prompts of a rollout batch are answered in long (thinking) mode and which in short mode.

The paper's hybrid RL assigns 50% of the prompts to long mode, drawn per prompt; the N samples of a
prompt share its mode (one group, one mode). ``long_only`` and ``short_only`` are the ablation's
single-mode runs.

The draw is a pure function of (seed, step, prompt index): nothing to checkpoint, and a resumed run
draws exactly the modes the uninterrupted run would have drawn at the same step.
"""

from __future__ import annotations

import random
from typing import Literal

from blocks.answers import Mode

Schedule = Literal["hybrid", "long_only", "short_only"]
SCHEDULES: tuple[Schedule, ...] = ("hybrid", "long_only", "short_only")


class ModeScheduler:
    """Assigns a mode to each prompt of a step.

    Args:
        schedule: ``hybrid`` (each prompt goes long with probability ``long_fraction``),
            ``long_only`` or ``short_only``.
        long_fraction: probability of long mode per prompt in ``hybrid`` (paper: 0.5).
        seed: selects the random stream.

    Example:
        >>> ModeScheduler("long_only").modes(step=0, num_prompts=2)
        ['long', 'long']
    """

    def __init__(self, schedule: Schedule = "hybrid", long_fraction: float = 0.5, seed: int = 0) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"mode schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0.0 <= long_fraction <= 1.0:
            raise ValueError(f"long_fraction must be in [0, 1], got {long_fraction}")
        self.schedule, self.long_fraction, self.seed = schedule, long_fraction, seed

    def modes(self, step: int, num_prompts: int) -> list[Mode]:
        """The mode of each of the ``num_prompts`` prompts of optimisation step ``step``."""
        if self.schedule != "hybrid":
            return ["long" if self.schedule == "long_only" else "short"] * num_prompts
        # A string seed is hashed with SHA-512 by `random`: the stream does not depend on PYTHONHASHSEED.
        rng = random.Random(f"mcpv/rl-modes/{self.seed}/{step}")
        return ["long" if rng.random() < self.long_fraction else "short" for _ in range(num_prompts)]

    @staticmethod
    def per_sample(modes: list[Mode], group_size: int) -> list[Mode]:
        """Prompt modes repeated for the ``group_size`` samples of each prompt (prompt-major layout)."""
        return [mode for mode in modes for _ in range(group_size)]
