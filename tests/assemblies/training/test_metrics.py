"""Teacher-forced exact match equals greedy correctness; ANLS and CER on known strings."""

from __future__ import annotations

import pytest
import torch

from assemblies.training.metrics import AnswerMetrics, RetrievalAccuracy, anls_score, answer_predictions
from blocks.batch import IGNORE_INDEX


def _logits_predicting(tokens: list[list[int]], vocab: int = 10) -> torch.Tensor:
    """Logits whose argmax at position t is tokens[b][t]."""
    out = torch.zeros(len(tokens), len(tokens[0]), vocab)
    for b, row in enumerate(tokens):
        for t, tok in enumerate(row):
            out[b, t, tok] = 5.0
    return out


def test_exact_only_when_every_answer_token_is_the_argmax():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4], [IGNORE_INDEX, IGNORE_INDEX, 3, 4]])
    # logits[t] predicts token t+1: row 0 predicts 3, 4 correctly; row 1 gets the last token wrong.
    logits = _logits_predicting([[0, 3, 4, 0], [0, 3, 5, 0]])
    preds, refs, exact = answer_predictions(logits, labels)
    assert exact.tolist() == [True, False]
    assert preds[1].tolist() == [3, 5] and refs[1].tolist() == [3, 4]


def test_anls_thresholds_and_case():
    assert anls_score("Paris", "paris") == 1.0
    assert anls_score("pariz", "paris") == pytest.approx(0.8)
    assert anls_score("xyz", "paris") == 0.0


def test_answer_metrics_aggregate():
    metrics = AnswerMetrics()
    labels = torch.tensor([[IGNORE_INDEX, 1, 2], [IGNORE_INDEX, 1, 2]])
    logits = _logits_predicting([[1, 2, 0], [1, 3, 0]])
    metrics.update(logits, labels, decode=lambda ids: "".join("abcd"[i] for i in ids))
    values = metrics.compute()
    assert values["acc"] == pytest.approx(0.5)
    assert values["cer"] == pytest.approx(0.25)  # "bc" vs "bd": 1 error in 4 reference characters


def test_retrieval_is_right_when_the_top_text_matches_even_a_duplicate_caption():
    metric = RetrievalAccuracy()
    logits = torch.tensor([[0.0, 1.0, 5.0], [0.0, 5.0, 1.0], [5.0, 0.0, 1.0]])
    matches = torch.eye(3, dtype=torch.bool)
    metric.update(logits, matches)  # only row 1 picks its own caption
    assert metric.compute() == {"acc": pytest.approx(1 / 3), "chance": pytest.approx(1 / 3)}
    metric.reset()
    matches[0, 2] = matches[2, 0] = True  # captions 0 and 2 are the same text
    metric.update(logits, matches)
    assert metric.compute() == {"acc": pytest.approx(1.0), "chance": pytest.approx(2 / 3)}  # blind: pick text 0
