"""Rewards and claim checkers for tests of the RL stages, with signal even for a random tiny model."""

from __future__ import annotations

from blocks.answers import parse_completion
from blocks.data.record import Record
from blocks.rl import ClaimReport, Rollout, register_reward
from blocks.rl.claims import CheckedClaim

VOWELS = "aeiou"


@register_reward("test_vowel_start")
def vowel_start():
    """1.0 when the answer starts with a vowel: learnable from scratch (random tokens often do)."""
    def reward(rollout: Rollout) -> float:
        answer = parse_completion(rollout.text, rollout.mode).answer or rollout.text.strip()
        return float(answer[:1].casefold() in VOWELS) if answer else 0.0
    return reward


def vowel_checker(record: Record):
    """A claim per word: accepted when it starts with a vowel, rejected otherwise (a stand-in for a scene)."""
    def check(response: str) -> ClaimReport:
        return ClaimReport(tuple(CheckedClaim(w, "accepted" if w[:1].casefold() in VOWELS else "rejected")
                                 for w in response.split()))
    return check
