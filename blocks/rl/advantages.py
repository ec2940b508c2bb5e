"""Group-relative advantages: GRPO, Dr. GRPO (no std), RLOO (leave-one-out).

Rollouts are laid out prompt-major: sample ``s`` of prompt ``p`` is row ``p * group_size + s``. A
group whose (valid) rewards are all equal carries no learning signal; it is counted and dropped
from the loss through ``keep`` (TRL logs it as ``frac_reward_zero_std``; DAPO's ``filter_groups``
drops it). Invalid samples (a reward that failed) are left out of their group's statistics and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Estimator = Literal["grpo", "dr_grpo", "rloo"]
ESTIMATORS: tuple[Estimator, ...] = ("grpo", "dr_grpo", "rloo")


@dataclass(frozen=True)
class GroupStats:
    """Per-group statistics over the valid samples: ``mean``, ``std`` (unbiased; 0 below two
    samples), ``count`` [P] and ``spread`` = max - min [P] (0 below one sample)."""

    mean: Tensor
    std: Tensor
    count: Tensor
    spread: Tensor


def group_stats(values: Tensor, valid: Tensor) -> GroupStats:
    """values, valid [P, G] -> statistics of each row over its ``valid`` entries (float32)."""
    values, weight = values.float(), valid.float()
    count = weight.sum(1)
    mean = torch.where(valid, values, 0.0).sum(1) / count.clamp(min=1)
    centred = torch.where(valid, values - mean[:, None], 0.0)
    # Unbiased std, as TRL and verl use for GRPO.
    std = (centred.pow(2).sum(1) / (count - 1).clamp(min=1)).sqrt() * (count > 1)
    high = torch.where(valid, values, -torch.inf).amax(1)
    low = torch.where(valid, values, torch.inf).amin(1)
    spread = torch.where(count > 0, high - low, 0.0)
    return GroupStats(mean, std, count, spread)


def standardise_in_groups(values: Tensor, valid: Tensor, eps: float = 1e-6) -> Tensor:
    """values, valid [P, G] -> (x - group mean) / group std on valid entries; 0 elsewhere and in
    groups of equal values (the paper's group-standardised reward-model score)."""
    stats = group_stats(values, valid)
    z = (values.float() - stats.mean[:, None]) / (stats.std[:, None] + eps)
    return torch.where(valid & (stats.std[:, None] > 0), z, 0.0)


@dataclass(frozen=True)
class GroupAdvantages:
    """``values`` [B] (0 on dropped rows), ``keep`` [B] bool (rows the loss should use),
    ``zero_variance_groups`` (groups dropped because their valid rewards were all equal or fewer
    than two were valid) out of ``groups``."""

    values: Tensor
    keep: Tensor
    zero_variance_groups: int
    groups: int

    @property
    def zero_variance_fraction(self) -> float:
        return self.zero_variance_groups / max(self.groups, 1)


def group_advantages(rewards: Tensor, group_size: int, estimator: Estimator = "grpo",
                     valid: Tensor | None = None, eps: float = 1e-4, equal_tol: float = 1e-6) -> GroupAdvantages:
    """Advantages of prompt-major ``rewards`` [B] (B = prompts x ``group_size``).

    - ``grpo``: (r - mean) / (std + eps), std unbiased over the group (TRL's eps 1e-4).
    - ``dr_grpo``: r - mean (Dr. GRPO: dividing by the std over-weights easy and hard prompts).
    - ``rloo``: r - mean of the other valid samples of the group.

    ``valid`` [B] bool excludes samples from their group's statistics and from ``keep``. A group is
    dropped when max - min of its valid rewards is <= ``equal_tol``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"advantage estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be [prompts * group_size] with group_size={group_size}, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.float().view(-1, group_size)
    ok = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.view(-1, group_size).bool()
    stats = group_stats(r, ok)
    informative = (stats.count >= 2) & (stats.spread > equal_tol)
    centred = r - stats.mean[:, None]
    if estimator == "grpo":
        adv = centred / (stats.std[:, None] + eps)
    elif estimator == "dr_grpo":
        adv = centred
    else:  # mean of the others = (n * mean - r) / (n - 1), so r - that = n / (n - 1) * (r - mean)
        n = stats.count[:, None]
        adv = centred * n / (n - 1).clamp(min=1)
    keep = ok & informative[:, None]
    return GroupAdvantages(values=torch.where(keep, adv, 0.0).reshape(-1), keep=keep.reshape(-1),
                           zero_variance_groups=int((~informative).sum()), groups=r.shape[0])
