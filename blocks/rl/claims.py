"""Claim-level verification of responses and preference pairs from it (RLAIF-V).

RLAIF-V samples N responses per prompt from one model with one decoding setup (seeds only differ,
so the pairs are deconfounded), splits each into atomic claims, checks each claim, scores a
response by -(rejected claims) and pairs responses whose scores differ by at least 1.

The checker is a slot: any ``ResponseChecker`` (a callable from a response to a ``ClaimReport``,
bound to one prompt). Built in: ``blocks.rl.scene_claims.SceneChecker`` (the built-in scenes'
ground truth) and ``YesNoChecker`` for users' data, which splits a response into sentences and asks
a yes/no question per sentence through an adapter ``ask(question) -> bool | None`` that the caller
binds to the prompt's media, e.g. the policy itself in short mode::

    def ask(question: str) -> bool | None:        # one image, greedy, short mode
        return parse_yes_no(generate(image, question))
    report = YesNoChecker(ask)(response)

A claim the checker cannot decide is *unverifiable*: counted, never rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["accepted", "rejected", "unverifiable"]


@dataclass(frozen=True)
class CheckedClaim:
    """One atomic claim (as readable text) and its verdict."""

    text: str
    verdict: Verdict


@dataclass(frozen=True)
class ClaimReport:
    """The checked claims of one response; ``score`` = -(rejected claims)."""

    claims: tuple[CheckedClaim, ...]

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict == verdict for c in self.claims)

    @property
    def score(self) -> int:
        return -self.count("rejected")


ResponseChecker = Callable[[str], ClaimReport]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? or a newline), stripped, empty ones dropped."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def parse_yes_no(reply: str) -> bool | None:
    """``True`` / ``False`` when the reply starts with yes / no (any case, punctuation), else ``None``."""
    first = re.match(r"\W*(\w+)", reply)
    word = first.group(1).casefold() if first else ""
    return True if word == "yes" else False if word == "no" else None


def claim_question(claim: str) -> str:
    """The yes/no question asked about ``claim``."""
    return f'Is this statement about the image correct? "{claim}" Answer yes or no.'


class YesNoChecker:
    """Checks each sentence of a response with ``ask(claim_question(sentence))``: yes accepts, no
    rejects, ``None`` leaves it unverifiable. ``split`` turns a response into claims."""

    def __init__(self, ask: Callable[[str], bool | None],
                 split: Callable[[str], list[str]] = split_sentences) -> None:
        self.ask, self.split = ask, split

    def __call__(self, response: str) -> ClaimReport:
        verdicts = {True: "accepted", False: "rejected", None: "unverifiable"}
        return ClaimReport(tuple(CheckedClaim(c, verdicts[self.ask(claim_question(c))])  # type: ignore[arg-type]
                                 for c in self.split(response)))


def contradiction_rate(reports: Sequence[ClaimReport]) -> float | None:
    """Rejected / (accepted + rejected) claims over ``reports``; None when no claim was decided (a model
    that stopped describing has no rate, not a perfect one)."""
    rejected = sum(r.count("rejected") for r in reports)
    decided = rejected + sum(r.count("accepted") for r in reports)
    return rejected / decided if decided else None


@dataclass(frozen=True)
class PreferencePair:
    """Indices of the ``chosen`` and ``rejected`` responses of one prompt, with their scores."""

    chosen: int
    rejected: int
    chosen_score: int
    rejected_score: int


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.casefold().split()
    return {tuple(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def near_duplicates(responses: Sequence[str], threshold: float = 0.9, n: int = 3) -> set[int]:
    """Indices of responses whose word ``n``-gram Jaccard similarity to an earlier kept one exceeds
    ``threshold`` (RLAIF-V drops them before ranking; it uses 10-grams on longer responses)."""
    kept: list[set[tuple[str, ...]]] = []
    dropped = set()
    for i, text in enumerate(responses):
        grams = _ngrams(text, n)
        if any(len(grams & k) / len(grams | k) > threshold for k in kept):
            dropped.add(i)
        else:
            kept.append(grams)
    return dropped


def build_pairs(responses: Sequence[str], reports: Sequence[ClaimReport], *, min_gap: int = 1, max_pairs: int = 2,
                max_word_gap: int | None = None, duplicate_threshold: float = 0.9) -> list[PreferencePair]:
    """Preference pairs among the N responses to one prompt.

    Candidates: near-duplicates removed; a chosen response must have at least one accepted claim
    (or an empty answer, which claims nothing, would beat every description with one error); the
    scores differ by >= ``min_gap``; lengths differ by <= ``max_word_gap`` words when given
    (RLAIF-V's length filter). Pairs are taken by largest score gap, then smallest length gap, each
    response in at most one pair, up to ``max_pairs`` (RLAIF-V: 2 per prompt).
    """
    if len(responses) != len(reports):
        raise ValueError(f"{len(responses)} responses but {len(reports)} claim reports")
    dropped = near_duplicates(responses, duplicate_threshold)
    words = [len(r.split()) for r in responses]
    candidates = []
    for i, good in enumerate(reports):
        for j, bad in enumerate(reports):
            gap, length_gap = good.score - bad.score, abs(words[i] - words[j])
            if (i in dropped or j in dropped or gap < min_gap or good.count("accepted") == 0
                    or (max_word_gap is not None and length_gap > max_word_gap)):
                continue
            candidates.append((-gap, length_gap, i, j))
    pairs, used = [], set()
    for _, _, i, j in sorted(candidates):
        if len(pairs) == max_pairs:
            break
        if i not in used and j not in used:
            used |= {i, j}
            pairs.append(PreferencePair(i, j, reports[i].score, reports[j].score))
    return pairs
