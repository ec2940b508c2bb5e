"""Learning-rate schedules as ``LambdaLR`` factories, built from ``_partial_`` configs.

Each factory takes the optimizer and the stage's step count and returns a per-step scheduler, so
the same config works for every stage length. Multipliers apply to each param group's own LR,
which keeps the per-block learning rates of a stage in their ratios.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup_steps(total_steps: int, warmup: float | int) -> int:
    """``warmup`` < 1 is a fraction of ``total_steps``; otherwise a step count."""
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def wsd_multiplier(step: int, total_steps: int, warmup: float | int = 0.01, decay: float = 0.2,
                   min_ratio: float = 0.2) -> float:
    """Warmup-stable-decay (MiniCPM): linear warm-up, a constant plateau, then a decay to ``min_ratio``.

    The paper's pre-training uses a 5e-5 plateau decaying to 1e-5 (``min_ratio`` 0.2). The decay is
    linear over the last ``decay`` fraction of the steps (MiniCPM also proposes exponential decay;
    linear has no extra constant to choose).
    """
    warm = _warmup_steps(total_steps, warmup)
    decay_steps = max(1, int(round(decay * total_steps)))
    decay_start = total_steps - decay_steps
    if step < warm:
        return (step + 1) / warm
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / decay_steps)
    return 1.0 - (1.0 - min_ratio) * progress


def cosine_multiplier(step: int, total_steps: int, warmup: float | int = 0.0, min_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` (SFT: 1e-5 -> 1e-6 is ``min_ratio`` 0.1)."""
    warm = _warmup_steps(total_steps, warmup)
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm + 1) / max(1, total_steps - warm))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.01, decay: float = 0.2,
        min_ratio: float = 0.2) -> LambdaLR:
    """A per-step WSD scheduler over ``total_steps`` optimizer steps."""
    return LambdaLR(optimizer, lambda step: wsd_multiplier(step, total_steps, warmup, decay, min_ratio))


def cosine(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.0, min_ratio: float = 0.1) -> LambdaLR:
    """A per-step warm-up + cosine scheduler over ``total_steps`` optimizer steps."""
    return LambdaLR(optimizer, lambda step: cosine_multiplier(step, total_steps, warmup, min_ratio))


def constant(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.0) -> LambdaLR:
    """Linear warm-up then the base LR (``total_steps`` is accepted so every schedule has one signature)."""
    warm = _warmup_steps(total_steps, warmup)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warm) if warm else 1.0)
