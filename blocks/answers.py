"""Answers of generated text: split off the reasoning, normalise, verify against a reference.

One set of rules for everything that scores generations: generation-based evaluation
(``tasks/evaluate.py``) and the RL accuracy reward use these same functions, so a held-out score
and a reward agree on the same output.

Generated text is what follows the generation prompt. In long (thinking) mode the prompt ends with
``<think>\\n``, so a well-formed completion is ``reasoning\\n</think>\\n\\nanswer``; in short mode the
prompt already holds the empty think block and the completion is the answer. A long completion with
no ``</think>`` (cut off, or malformed) has no answer: it scores as an empty answer, as lmms-eval does.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Mode = Literal["short", "long"]
MODES: tuple[Mode, ...] = ("short", "long")

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = ".,;:!?\"'`()[]{}"
_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_CHOICE = re.compile(r"^\(?([A-Za-z])\)?(?:[.:)]|\s|$)")
_ANSWER_TAG = re.compile(r"answer\s*[:：]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAnswer:
    """A completion split into ``reasoning`` (None in short mode) and ``answer``.

    ``well_formed``: long mode has exactly one ``</think>`` and a non-empty answer after it; short
    mode has no think tags and a non-empty answer.
    """

    reasoning: str | None
    answer: str
    well_formed: bool


def parse_completion(text: str, mode: Mode) -> ParsedAnswer:
    """Split generated ``text`` (special tokens already removed) by the mode its prompt was in."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "short":
        answer = text.strip()
        return ParsedAnswer(None, answer, bool(answer) and THINK_OPEN not in text and THINK_CLOSE not in text)
    if THINK_CLOSE not in text:
        return ParsedAnswer(text.strip(), "", False)
    reasoning, _, answer = text.partition(THINK_CLOSE)
    answer = answer.strip()
    well_formed = text.count(THINK_CLOSE) == 1 and THINK_OPEN not in text and bool(answer) and bool(reasoning.strip())
    return ParsedAnswer(reasoning.strip(), answer, well_formed)


def final_answer(answer: str) -> str:
    """The part of an answer a verifier reads: after the last ``Answer:`` when there is one."""
    tags = list(_ANSWER_TAG.finditer(answer))
    return answer[tags[-1].end():] if tags else answer


def normalize(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed, surrounding punctuation and a final period removed."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
    return text.strip(_EDGE_PUNCT + " ")


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after ``normalize``; an empty prediction never matches."""
    pred = normalize(final_answer(prediction))
    return bool(pred) and pred == normalize(reference)


def _number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if len(found) != 1:  # none, or ambiguous ("3 or 4")
        return None
    return float(found[0].replace(",", ""))


def numeric_match(prediction: str, reference: str, rel_tol: float = 1e-6) -> bool:
    """The one number in the prediction equals the reference's number (relative tolerance)."""
    pred, ref = _number(final_answer(prediction)), _number(reference)
    return pred is not None and ref is not None and math.isclose(pred, ref, rel_tol=rel_tol, abs_tol=rel_tol)


def choice_match(prediction: str, reference: str) -> bool:
    """The option letter the prediction starts with (``B``, ``(B)``, ``B.``) equals the reference's."""
    pred, ref = _CHOICE.match(final_answer(prediction).strip()), _CHOICE.match(reference.strip())
    return pred is not None and ref is not None and pred.group(1).upper() == ref.group(1).upper()


VERIFIERS: dict[str, Callable[[str, str], bool]] = {
    "exact": exact_match, "numeric": numeric_match, "choice": choice_match}


def verify(prediction: str, reference: str, kind: str = "exact") -> bool:
    """Whether ``prediction`` (an answer, reasoning already split off) is right, by verifier ``kind``.

    ``auto`` picks numeric when the reference is one number, choice when it is one option letter,
    else exact.
    """
    if kind == "auto":
        ref = reference.strip()
        kind = ("choice" if re.fullmatch(r"\(?[A-Za-z]\)?", ref)
                else "numeric" if _NUMBER.fullmatch(ref.replace(" ", "")) else "exact")
    if kind not in VERIFIERS:
        raise ValueError(f"unknown verifier {kind!r}; choose from {[*VERIFIERS, 'auto']}")
    return VERIFIERS[kind](prediction, reference)
