"""Sum of weighted reward components, each recorded separately; a failing reward never stops the run.

The paper's reward is R = R_acc + R_format + R_rep + 0.5 * R~_rm, with R~_rm the reward-model score
standardised within the prompt's group. Here that is the spec::

    {"accuracy": {}, "rlpr": {"given": True}, "format": {}, "repetition": {"n": 10, "limit": 10},
     "rm": {"given": True, "weight": 0.5, "standardise": True}}

``accuracy`` and ``rlpr`` are the two forms of R_acc, routed per sample by ``meta["verifier"]``.
A *given* component is computed by the caller (it needs a model forward) and passed in per sample.

Rules for a sample:
- a component returning ``None`` does not apply to it and adds 0;
- a component that raises, or returns NaN/inf, is a *failure*: counted per component, logged with the
  sample index, adds 0, and the sample is marked invalid (``valid`` False: left out of its group's
  standardisation here, of the advantages' statistics and of the loss), so a broken verifier cannot
  pass for a wrong answer;
- a sample no component applies to is *unscored*: counted and marked invalid the same way.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from blocks.answers import MODES, Mode
from blocks.rl.advantages import standardise_in_groups
from blocks.rl.rewards import RewardFn, Rollout, build_reward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardComponent:
    """``name`` (its log key), ``weight``, ``fn`` (``None``: given by the caller), ``standardise``
    (within each group, before weighting)."""

    name: str
    weight: float = 1.0
    fn: RewardFn | None = None
    standardise: bool = False


def build_components(spec: Mapping[str, Mapping[str, Any]]) -> list[RewardComponent]:
    """Components from ``{name: {weight?, standardise?, given?, **reward options}}`` (config form)."""
    components = []
    for name, options in spec.items():
        options = dict(options or {})
        weight, standardise = float(options.pop("weight", 1.0)), bool(options.pop("standardise", False))
        if options.pop("given", False):
            if options:
                raise ValueError(f"reward {name!r} is given by the caller; unexpected options {sorted(options)}")
            fn = None
        else:
            fn = build_reward(name, **options)
        components.append(RewardComponent(name, weight, fn, standardise))
    return components


@dataclass(frozen=True)
class RewardBatch:
    """``total`` [B] float32 (0 on invalid samples); ``values[name]``: each component's raw value per
    sample (``None``: not applicable or failed); ``valid`` [B] bool; ``failures[name]`` counts;
    ``unscored``: samples no component applied to."""

    total: Tensor
    values: dict[str, list[float | None]]
    valid: Tensor
    failures: dict[str, int]
    unscored: int

    def summary(self, modes: Sequence[Mode]) -> dict[str, float]:
        """Log-ready means per component and mode over the samples it applied to (``reward/<name>/<mode>``),
        the total per mode over valid samples, and the failure counts."""
        out: dict[str, float] = {}
        for mode in MODES:
            for name, values in self.values.items():
                got = [v for v, m in zip(values, modes) if m == mode and v is not None]
                if got:
                    out[f"reward/{name}/{mode}"] = sum(got) / len(got)
            rows = [i for i, m in enumerate(modes) if m == mode and self.valid[i]]
            if rows:
                out[f"reward/total/{mode}"] = float(self.total[rows].mean())
        out.update({f"reward/failures/{name}": float(n) for name, n in self.failures.items()})
        out["reward/unscored"] = float(self.unscored)
        return out


class RewardCombiner:
    """Scores a prompt-major batch of rollouts with weighted components (see the module docstring)."""

    def __init__(self, components: Sequence[RewardComponent]) -> None:
        names = [c.name for c in components]
        if not components or len(set(names)) != len(names):
            raise ValueError(f"reward components must be non-empty with unique names, got {names}")
        self.components = list(components)

    def __call__(self, rollouts: Sequence[Rollout], group_size: int,
                 given: Mapping[str, Sequence[float | None]] | None = None) -> RewardBatch:
        """``rollouts`` [B] prompt-major (B = prompts x ``group_size``); ``given[name]`` [B] for each
        component without ``fn``."""
        n, given = len(rollouts), given or {}
        if group_size < 1 or n % group_size:
            raise ValueError(f"{n} rollouts do not split into groups of {group_size}")
        values: dict[str, list[float | None]] = {}
        failed = torch.zeros(n, dtype=torch.bool)
        failures: dict[str, int] = {}
        for comp in self.components:
            values[comp.name], bad = self._values(comp, rollouts, given)
            failures[comp.name] = int(bad.sum())
            failed |= bad
        present = {name: torch.tensor([v is not None for v in raw], dtype=torch.bool) for name, raw in values.items()}
        unscored = ~torch.stack(list(present.values())).any(0) & ~failed
        for i in torch.nonzero(unscored).flatten().tolist():
            log.warning("reward: no component applies to sample %d (mode %s, verifier %r); it is skipped",
                        i, rollouts[i].mode, rollouts[i].meta.get("verifier", "auto"))
        valid = ~failed & ~unscored
        total = torch.zeros(n)
        for comp in self.components:
            x = torch.tensor([0.0 if v is None else v for v in values[comp.name]])
            if comp.standardise:  # over the group's valid samples that have a value
                used = (present[comp.name] & valid).view(-1, group_size)
                x = standardise_in_groups(x.view(-1, group_size), used).reshape(-1)
            total += comp.weight * x
        return RewardBatch(torch.where(valid, total, 0.0), values, valid, failures, int(unscored.sum()))

    @staticmethod
    def _values(comp: RewardComponent, rollouts: Sequence[Rollout],
                given: Mapping[str, Sequence[float | None]]) -> tuple[list[float | None], Tensor]:
        """Raw values of one component and a [B] mask of the samples it failed on."""
        if comp.fn is None:
            if comp.name not in given or len(given[comp.name]) != len(rollouts):
                raise ValueError(f"reward {comp.name!r} is given by the caller: pass given[{comp.name!r}] "
                                 f"with {len(rollouts)} values")
            checked = [_check(comp.name, i, v) for i, v in enumerate(given[comp.name])]
        else:
            checked = [_call(comp.name, comp.fn, i, r) for i, r in enumerate(rollouts)]
        bad = torch.tensor([v is _FAILED for v in checked], dtype=torch.bool)
        return [None if v is _FAILED else v for v in checked], bad  # type: ignore[misc]


_FAILED = object()  # a reward that raised or returned a non-number (already logged)


def _check(name: str, index: int, value: Any) -> Any:
    """``value`` as a float, ``None`` as is, anything else (NaN, inf, not a number) -> ``_FAILED``."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    log.warning("reward %r returned %r on sample %d; counted as a failure, the sample is skipped", name, value, index)
    return _FAILED


def _call(name: str, fn: RewardFn, index: int, rollout: Rollout) -> Any:
    try:
        value = fn(rollout)
    except Exception as error:  # noqa: BLE001 -- any reward bug is counted, never fatal
        log.warning("reward %r failed on sample %d (%s: %s); counted, the sample is skipped",
                    name, index, type(error).__name__, error)
        return _FAILED
    return _check(name, index, value)
