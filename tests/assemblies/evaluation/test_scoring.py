"""The evaluation scorer and the RL accuracy reward agree; a predictions file survives an interrupted write."""

from __future__ import annotations

import pytest

from assemblies.evaluation.scoring import read_predictions, score_predictions, score_row
from blocks.rl.rewards import Rollout, build_reward

# (generated text, mode, reference, verifier): right and wrong answers, both modes, every verifier.
CASES = [
    ("3", "short", "3", "auto"), ("There are 3 shapes.", "short", "3", "auto"), ("3 or 4", "short", "3", "auto"),
    ("Red.", "short", "red", "auto"), ("blue", "short", "red", "exact"), ("", "short", "red", "exact"),
    ("<think>red", "short", "red", "auto"), ("(B) because", "short", "B", "choice"), ("C", "short", "B", "auto"),
    ("count them\n</think>\n\n3", "long", "3", "auto"), ("count them\n</think>\n\nAnswer: 4", "long", "4", "numeric"),
    ("it is red", "long", "red", "auto"), ("red</think>", "long", "red", "exact"),
    ("looks\n</think>\n\nThe answer: left", "long", "left", "auto"), ("a</think>b</think>red", "long", "red", "auto"),
]


def test_evaluation_scorer_and_rl_accuracy_reward_agree_on_the_same_outputs():
    reward = build_reward("accuracy")
    scored = [score_row(text, mode, ref, kind)["correct"] for text, mode, ref, kind in CASES]
    rewarded = [reward(Rollout(text, mode, ref, meta={"verifier": kind})) for text, mode, ref, kind in CASES]
    assert rewarded == [float(c) for c in scored]
    assert 0 < sum(scored) < len(scored)  # both outcomes occur


def test_a_row_without_reference_counts_for_format_not_accuracy():
    row = {"id": "x", "task": "t", "mode": "short", "finish_reason": "stop", "generated_tokens": 2, "seconds": 0.5,
           **score_row("hello", "short", None)}
    assert row["correct"] is None and row["well_formed"]
    (score,) = score_predictions([row])
    assert (score.samples, score.scored, score.accuracy, score.format_failure_rate) == (1, 0, None, 0.0)


def test_a_torn_last_line_is_dropped_and_cut_from_the_file_and_other_damage_is_an_error(tmp_path):
    good = '{"id": "a", "task": "t", "mode": "short", "text": "1", "reference": "1", "finish_reason": "stop", ' \
           '"generated_tokens": 2}\n'
    path = tmp_path / "p.jsonl"
    path.write_text(good + '{"id": "b", "ta')
    assert [r["id"] for r in read_predictions(path)] == ["a"] and path.read_text().endswith('"ta')
    assert len(read_predictions(path, repair=True)) == 1 and path.read_text() == good
    path.write_text('{"id": "b"\n' + good)
    with pytest.raises(ValueError, match="p.jsonl:1"):
        read_predictions(path)
    path.write_text('{"id": "b"}\n')
    with pytest.raises(ValueError, match="p.jsonl:1: a prediction row needs"):
        read_predictions(path)
