"""Held-out metrics on short answers: exact match, ANLS and character error rate.

Evaluation is teacher-forced: one forward pass over prompt + reference answer, then the argmax
token at every answer position. The answer is exactly right iff every one of those argmaxes equals
the reference token, which is precisely when greedy decoding would produce the reference answer, so
exact match equals greedy-generation exact match at the cost of one batched forward. ANLS and CER
compare the teacher-forced argmax string with the reference (a per-character view of the same
predictions; free-running generation can only drift further after a first error).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.text import CharErrorRate

from blocks.batch import IGNORE_INDEX


def answer_predictions(logits: Tensor, labels: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Teacher-forced predictions at the supervised positions of each row.

    Args:
        logits: [B, T, V] with logits[b, t] predicting token t+1.
        labels: [B, T] reference tokens, IGNORE_INDEX where there is no loss (unshifted).

    Returns:
        (predicted ids per row, reference ids per row, exact [B] bool).
    """
    predicted = logits[:, :-1].argmax(-1)
    targets = labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    preds, refs = [], []
    exact = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    for row in range(labels.shape[0]):
        mask = supervised[row]
        preds.append(predicted[row][mask])
        refs.append(targets[row][mask])
        exact[row] = bool(mask.any()) and bool((preds[-1] == refs[-1]).all())
    return preds, refs, exact


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls_score(prediction: str, reference: str, threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity of one pair (DocVQA): 1 - NL if NL < threshold else 0."""
    prediction, reference = prediction.strip().lower(), reference.strip().lower()
    longest = max(len(prediction), len(reference))
    if longest == 0:
        return 1.0
    distance = _levenshtein(prediction, reference) / longest
    return 1.0 - distance if distance < threshold else 0.0


class ANLS(Metric):
    """Mean ANLS over (prediction, reference) string pairs."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: list[str], references: list[str]) -> None:
        for p, r in zip(predictions, references):
            self.total += anls_score(p, r, self.threshold)
            self.count += 1

    def compute(self) -> Tensor:
        return self.total / self.count.clamp(min=1)


class AnswerMetrics(torch.nn.Module):
    """Exact match, ANLS and CER for one held-out task, updated from teacher-forced logits."""

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.aggregation import MeanMetric

        self.accuracy = MeanMetric()
        self.anls = ANLS()
        self.cer = CharErrorRate()

    def update(self, logits: Tensor, labels: Tensor, decode) -> None:
        """``decode``: token ids (list[int]) -> str, e.g. the tokenizer's ``decode``."""
        preds, refs, exact = answer_predictions(logits, labels)
        self.accuracy.update(exact.float())
        pred_text = [decode(p.tolist()).strip() for p in preds]
        ref_text = [decode(r.tolist()).strip() for r in refs]
        self.anls.update(pred_text, ref_text)
        self.cer.update(pred_text, [r if r else " " for r in ref_text])

    def compute(self) -> dict[str, float]:
        return {"acc": float(self.accuracy.compute()), "anls": float(self.anls.compute()),
                "cer": float(self.cer.compute())}

    def reset(self) -> None:
        for metric in (self.accuracy, self.anls, self.cer):
            metric.reset()


class RetrievalAccuracy(torch.nn.Module):
    """Image -> text top-1 retrieval inside each evaluation batch: right when the top text is a match.

    ``chance`` is what a blind model gets on the same batches: it ranks the texts alike for every
    image, so at best it picks the most common caption of each batch (1 / batch size when all differ,
    more for a closed vocabulary such as the documents' boxed words).
    """

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.aggregation import MeanMetric

        self.accuracy = MeanMetric()
        self.blind = MeanMetric()

    def update(self, pair_logits: Tensor, matches: Tensor) -> None:
        """pair_logits [B, B] (rows images), matches [B, B] bool: the texts that match each image."""
        self.accuracy.update(matches.gather(1, pair_logits.argmax(1, keepdim=True)).float())
        rows = matches.shape[0]
        self.blind.update(matches.sum(0).max().float() / rows, weight=rows)

    def compute(self) -> dict[str, float]:
        return {"acc": float(self.accuracy.compute()), "chance": float(self.blind.compute())}

    def reset(self) -> None:
        self.accuracy.reset()
        self.blind.reset()
