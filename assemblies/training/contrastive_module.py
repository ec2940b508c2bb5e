"""The LightningModule of contrastive pre-training (``assemblies.contrastive.ContrastivePretrainer``).

Training, optimisers, schedules and exact resume are ``MLLMModule``'s; only the held-out metric
differs: image -> text retrieval top-1 within each evaluation batch instead of answer exact match.
"""

from __future__ import annotations

from torch import nn

from assemblies.contrastive import caption_matches, captions
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

    def chance(self, data) -> dict[str, float]:
        """Retrieval by a blind model, per task. It ranks the texts alike for every image, so at best it
        picks the most common caption of each evaluation batch: 1 / batch size when all differ, more
        for a closed vocabulary such as the documents' boxed words."""
        result = {}
        for task, loader in zip(self.heldout_tasks, data.val_dataloader()):
            hits = total = 0
            for batch in loader:
                matches = caption_matches(*captions(batch))
                hits, total = hits + int(matches.sum(0).max()), total + len(matches)
            result[task] = hits / total
        return result
