"""Reward functions of one rollout, and a registry that builds them by name (from a config).

A reward function maps a ``Rollout`` to a float, or to ``None`` when it does not apply to that
sample (accuracy on a free-form answer, which the RLPR probability reward scores instead). Rewards
that need a model forward (RLPR, a reward model) are computed by the caller and handed to the
combiner as given components (``blocks.rl.reward_combiner``); the helpers they need are here
(``verifier_of``, ``reward_model_text``) and in ``blocks.rl.rlpr``.

Built-ins (values before the combiner's weights):
- ``accuracy``: 1.0 / 0.0 by the rule verifiers of ``blocks.answers`` (the ones evaluation uses) on
  the answer after ``</think>``; an empty or missing answer scores 0.0; ``None`` without a reference
  or when the sample is routed to RLPR.
- ``format``: 0.0 when well-formed, -1.0 otherwise (a penalty, so R = R_acc for a clean sample).
  Well-formed is ``parse_completion(...).well_formed`` (long: one ``</think>``, non-empty reasoning
  and answer; short: non-empty answer, no think tags) and the generation stopped by itself.
- ``repetition``: -1.0 when some ``n``-word window occurs ``limit`` or more times (RLPR's rule), else 0.0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from blocks.answers import VERIFIERS, Mode, parse_completion, verify

FinishReason = Literal["stop", "length"]
RLPR = "rlpr"
VERIFIER_KINDS = (*VERIFIERS, "auto", RLPR)


@dataclass(frozen=True)
class Rollout:
    """One sampled completion and what a reward may look at.

    ``text``: the generated text after the generation prompt, special tokens removed.
    ``mode``: the prompt's mode. ``reference``: the reference answer, if any. ``meta``: the record's
    meta; ``meta["verifier"]`` routes the sample (one of ``VERIFIER_KINDS``; default ``"auto"``).
    ``finish_reason``: ``"stop"`` (a terminator was generated) or ``"length"`` (cut at max new tokens).
    """

    text: str
    mode: Mode
    reference: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    finish_reason: FinishReason = "stop"


RewardFn = Callable[[Rollout], float | None]
REWARDS: dict[str, Callable[..., RewardFn]] = {}


def register_reward(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    """Decorator: register a factory ``(**options) -> RewardFn`` under ``name``."""
    def add(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = factory
        return factory
    return add


def build_reward(name: str, **options: Any) -> RewardFn:
    """The reward function registered as ``name``, built with ``options``."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; registered: {sorted(REWARDS)}")
    return REWARDS[name](**options)


def verifier_of(rollout: Rollout) -> str:
    """How this sample's correctness is scored: a rule verifier kind, or ``"rlpr"`` (free-form)."""
    kind = rollout.meta.get("verifier", "auto")
    if kind not in VERIFIER_KINDS:
        raise ValueError(f"meta['verifier'] must be one of {VERIFIER_KINDS}, got {kind!r}")
    return kind


def reward_model_text(rollout: Rollout) -> str | None:
    """What a reward model scores: the final answer only in long mode (the paper: scoring reasoning
    chains was unstable), the whole completion in short mode; ``None`` when there is no answer."""
    answer = parse_completion(rollout.text, rollout.mode).answer
    return answer or None


@register_reward("accuracy")
def accuracy_reward() -> RewardFn:
    """1.0 when the answer after ``</think>`` passes the sample's rule verifier, else 0.0."""
    def accuracy(rollout: Rollout) -> float | None:
        kind = verifier_of(rollout)
        if rollout.reference is None or kind == RLPR:
            return None
        answer = parse_completion(rollout.text, rollout.mode).answer
        return float(verify(answer, rollout.reference, kind))
    return accuracy


@register_reward("format")
def format_reward(penalty: float = -1.0) -> RewardFn:
    """0.0 for a well-formed completion that stopped by itself, ``penalty`` otherwise."""
    def format_(rollout: Rollout) -> float:
        ok = rollout.finish_reason == "stop" and parse_completion(rollout.text, rollout.mode).well_formed
        return 0.0 if ok else penalty
    return format_


def max_ngram_count(text: str, n: int) -> int:
    """How often the most frequent ``n``-word window of ``text`` occurs (0 when it has < n words)."""
    words = text.split()
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(counts.values(), default=0)


@register_reward("repetition")
def repetition_reward(n: int = 10, limit: int = 10, penalty: float = -1.0) -> RewardFn:
    """``penalty`` when some ``n``-word window of the completion repeats ``limit`` or more times
    (RLPR's defaults: 10 words, 10 times; tiny-scale completions need smaller values)."""
    if n < 1 or limit < 2:
        raise ValueError(f"repetition: need n >= 1 and limit >= 2, got n={n}, limit={limit}")

    def repetition(rollout: Rollout) -> float:
        return penalty if max_ngram_count(rollout.text, n) >= limit else 0.0
    return repetition
