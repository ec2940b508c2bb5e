"""Scoring generated answers: one prediction row per (sample, mode), a table per task x mode.

A row is scored from what was generated (``text``), the prompt's ``mode``, the ``reference`` and
the ``verifier`` kind, through ``blocks.answers`` (``parse_completion`` splits off the reasoning,
``verify`` checks the answer): the same functions the RL accuracy reward uses, so a held-out score
and a reward agree on the same output. Scoring a predictions file again (``score_only``) re-derives
every field from those four, so a changed rule applies to old files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blocks.answers import MODES, final_answer, normalize, parse_completion, verify

log = logging.getLogger(__name__)
# The fields of a prediction row, in the order they are written.
ROW_FIELDS = ("id", "task", "mode", "prompt", "reasoning", "answer", "extracted", "reference", "verifier", "correct",
              "well_formed", "finish_reason", "prompt_tokens", "generated_tokens", "seconds", "chance", "text")
# What rescoring and the table need from a row read back.
REQUIRED = ("id", "task", "mode", "text", "reference", "finish_reason", "generated_tokens")


def score_row(text: str, mode: str, reference: str | None, verifier: str = "auto") -> dict[str, Any]:
    """The scored fields of one generation: reasoning, answer, extracted answer, well_formed, correct.

    ``correct`` is None without a reference (the row counts for tokens and format, not accuracy).
    """
    parsed = parse_completion(text, mode)
    return {"reasoning": parsed.reasoning, "answer": parsed.answer,
            "extracted": normalize(final_answer(parsed.answer)), "well_formed": parsed.well_formed,
            "correct": None if reference is None else verify(parsed.answer, reference, verifier)}


def rescore(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its scored fields recomputed from ``text``, ``mode``, ``reference`` and ``verifier``."""
    return {**row, **score_row(row["text"], row["mode"], row.get("reference"), row.get("verifier", "auto"))}


@dataclass(frozen=True)
class TaskScore:
    """One line of the table: a task in one mode.

    ``accuracy`` over the ``scored`` rows (those with a reference), with its binomial standard error;
    ``truncation_rate``: share cut at ``max_new_tokens`` (finish reason ``length``);
    ``format_failure_rate``: share not ``well_formed`` (``blocks.answers.parse_completion``).
    """

    task: str
    mode: str
    samples: int
    scored: int
    accuracy: float | None
    stderr: float | None
    chance: float | None
    mean_generated_tokens: float
    truncation_rate: float
    format_failure_rate: float
    seconds_per_sample: float


def score_predictions(rows: Iterable[Mapping[str, Any]]) -> list[TaskScore]:
    """The per task x mode table of prediction rows (short mode first, tasks sorted by name)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["mode"], row["task"]), []).append(row)
    scores = []
    for (mode, task), group in sorted(groups.items(), key=lambda item: (_mode_order(item[0][0]), item[0][1])):
        judged = [bool(r["correct"]) for r in group if r.get("correct") is not None]
        accuracy = sum(judged) / len(judged) if judged else None
        n = len(group)
        scores.append(TaskScore(
            task=task, mode=mode, samples=n, scored=len(judged), accuracy=accuracy,
            stderr=math.sqrt(accuracy * (1 - accuracy) / len(judged)) if judged else None,
            chance=group[0].get("chance"),
            mean_generated_tokens=sum(r["generated_tokens"] for r in group) / n,
            truncation_rate=sum(r["finish_reason"] == "length" for r in group) / n,
            format_failure_rate=sum(not r["well_formed"] for r in group) / n,
            seconds_per_sample=sum(r.get("seconds") or 0.0 for r in group) / n))
    return scores


def _mode_order(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else len(MODES)


def mean_accuracy(scores: Iterable[TaskScore], mode: str) -> float | None:
    """Macro-average accuracy over the tasks of ``mode`` (None when none is scored)."""
    values = [s.accuracy for s in scores if s.mode == mode and s.accuracy is not None]
    return sum(values) / len(values) if values else None


def scores_as_metrics(scores: Iterable[TaskScore], prefix: str = "gen") -> dict[str, float]:
    """Flat ``{prefix}/{mode}/{task}/{acc,tokens,truncated,format_fail}`` numbers for a logger, plus
    ``{prefix}/{mode}/acc`` (macro-average over tasks)."""
    scores = list(scores)
    metrics: dict[str, float] = {}
    for s in scores:
        key = f"{prefix}/{s.mode}/{s.task}"
        if s.accuracy is not None:
            metrics[f"{key}/acc"] = s.accuracy
        metrics.update({f"{key}/tokens": s.mean_generated_tokens, f"{key}/truncated": s.truncation_rate,
                        f"{key}/format_fail": s.format_failure_rate})
    for mode in dict.fromkeys(s.mode for s in scores):
        if (acc := mean_accuracy(scores, mode)) is not None:
            metrics[f"{prefix}/{mode}/acc"] = acc
    return metrics


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(scores: Iterable[TaskScore]) -> str:
    """A plain-text table: one line per task x mode."""
    lines = [f"{'task':<18}{'mode':<7}{'n':>5}{'acc':>7}{'±se':>7}{'chance':>8}{'tokens':>8}{'trunc':>7}"
             f"{'format':>8}{'s/sample':>10}"]
    for s in scores:
        lines.append(f"{s.task:<18}{s.mode:<7}{s.samples:>5}{_fmt(s.accuracy, '.3f'):>7}{_fmt(s.stderr, '.3f'):>7}"
                     f"{_fmt(s.chance, '.3f'):>8}{s.mean_generated_tokens:>8.1f}{s.truncation_rate:>7.2f}"
                     f"{s.format_failure_rate:>8.2f}{s.seconds_per_sample:>10.4f}")
    return "\n".join(lines)


def write_scores(scores: list[TaskScore], directory: str | os.PathLike, about: Mapping[str, Any]) -> Path:
    """``scores.json`` (``about``, the mean accuracy per mode, the table) and ``scores.md`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modes = dict.fromkeys(s.mode for s in scores)
    payload = {**about, "mean_accuracy": {m: mean_accuracy(scores, m) for m in modes},
               "tasks": [asdict(s) for s in scores]}
    (directory / "scores.json").write_text(json.dumps(payload, indent=2))
    (directory / "scores.md").write_text(f"```\n{format_table(scores)}\n```\n")
    return directory / "scores.json"


def read_predictions(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of a predictions JSONL.

    A last line cut short (the run was interrupted while writing it) is dropped with a warning, and
    with ``repair`` also cut from the file so that appending continues on a clean line.

    Raises:
        ValueError: a line other than the last is not a JSON object, or a row lacks a needed field
            (the message names file and line).
    """
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows, good_end = [], 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: a write cut short
                log.warning("%s:%d: dropping an incomplete last line (%d bytes)", path, number, len(line))
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({error.msg})") from error
        missing = [k for k in REQUIRED if k not in row] if isinstance(row, dict) else []
        if not isinstance(row, dict) or missing:
            raise ValueError(f"{path}:{number}: a prediction row needs {missing or 'a JSON object'}")
        rows.append(row)
        good_end += len(line) + 1
    if repair and good_end < len(raw):
        with path.open("r+b") as handle:
            handle.truncate(good_end)
    return rows


def score_file(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[TaskScore]]:
    """Rescore a predictions file without generating: (rescored rows, table)."""
    rows = [rescore(row) for row in read_predictions(path)]
    return rows, score_predictions(rows)
