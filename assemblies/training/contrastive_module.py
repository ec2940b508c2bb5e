"""The LightningModule of contrastive pre-training (``assemblies.contrastive.ContrastivePretrainer``).

Training, optimisers, schedules and exact resume are ``MLLMModule``'s; only the held-out metric
differs: image -> text retrieval top-1 within each evaluation batch instead of answer exact match.
"""

from __future__ import annotations

from torch import nn

from assemblies.training.metrics import RetrievalAccuracy
from assemblies.training.module import MLLMModule
from blocks.batch import MultimodalBatch


class ContrastiveModule(MLLMModule):
    """``MLLMModule`` over a model whose ``forward(batch)`` returns ``.loss``, pair ``.logits`` [B, B] and
    their ``.matches`` [B, B]."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.task_metrics = nn.ModuleList(RetrievalAccuracy() for _ in self.heldout_tasks)

    def update_metrics(self, metrics: nn.Module, out, batch: MultimodalBatch) -> None:
        """Add one held-out batch's image-caption pair logits [B, B] to its task's retrieval accuracy."""
        metrics.update(out.logits, out.matches)

    def chance(self, data) -> dict[str, float | None]:
        """Retrieval by a blind model per task, measured on the held-out batches (``RetrievalAccuracy``)."""
        logged = self.trainer.callback_metrics
        return {task: float(logged[f"val/{task}/chance"]) if f"val/{task}/chance" in logged else None
                for task in self.heldout_tasks}
