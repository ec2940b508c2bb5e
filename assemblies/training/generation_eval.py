"""Generation-based held-out evaluation inside a training stage (a Lightning callback).

Every ``every_n_steps`` optimizer steps the callback answers a small held-out subset by greedy
generation (``assemblies.evaluation.evaluate``, the function ``tasks/evaluate.py`` runs) and logs
``gen/<mode>/<task>/acc`` (and tokens, truncation, format failures) to the stage's loggers, so the
curves have points inside a stage; when the stage reaches its last step it evaluates the full
held-out set and writes ``<stage>/predictions.jsonl``. The model is put back in training mode after
each evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf
from torch import nn

from assemblies.chat import Chat
from assemblies.evaluation import Evaluation, HeldoutSet, evaluate
from assemblies.training.config import instantiate, to_plain
from blocks.data.record import Record
from blocks.generation.tokens import generation_token_ids

log = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.jsonl"


class GenerationEvaluation(Callback):
    """Greedy generation-based evaluation during a stage and at its end.

    Args:
        make_chat: the assembly -> a ``Chat`` (tokenizer, processor settings, stop ids).
        records: the held-out records evaluated at the stage's end.
        during: the (smaller) set evaluated every ``every_n_steps`` steps (0: never).
        total_steps: the stage's optimizer steps (the end-of-stage evaluation runs once they are done).
        options: ``evaluate`` keywords (``modes``, ``batch_size``, ``max_new_tokens``).
        predictions: where the end-of-stage rows go (rank 0).
    """

    def __init__(self, make_chat: Callable[[nn.Module], Chat], records: Sequence[Record], during: Sequence[Record],
                 every_n_steps: int, total_steps: int, options: dict[str, Any], predictions: Path | None) -> None:
        self.make_chat, self.records, self.during = make_chat, records, during
        self.every_n_steps, self.total_steps, self.options = every_n_steps, total_steps, options
        self.predictions = predictions
        self.final: Evaluation | None = None
        self.seconds = 0.0          # spent evaluating, in-stage and final
        self._last_step = -1

    def _run(self, trainer: Trainer, pl_module: LightningModule, records: Sequence[Record],
             predictions: Path | None) -> Evaluation:
        model = pl_module.model
        training = model.training
        try:
            result = evaluate(self.make_chat(model), records, predictions=predictions, **self.options)
        finally:
            model.train(training)
        self.seconds += result.seconds
        metrics = result.metrics("gen")
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        return result

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if (self.every_n_steps and 0 < step < self.total_steps and step % self.every_n_steps == 0
                and step != self._last_step):
            self._last_step = step  # once per optimizer step, also with gradient accumulation
            result = self._run(trainer, pl_module, self.during, None)
            log.info("step %d: generation-based held-out accuracy %s (%.1f s)", step,
                     {k: round(v, 3) for k, v in result.metrics("gen").items() if k.count("/") == 2}, result.seconds)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step < self.total_steps:
            return  # stopped early (pipeline.stop_at_step): the stage is not done
        path = self.predictions if trainer.is_global_zero else None
        if path is not None:
            path.unlink(missing_ok=True)  # a rerun of the stage evaluates its final weights afresh
        self.final = self._run(trainer, pl_module, self.records, path)


def evaluation_settings(cfg: DictConfig, stage: DictConfig) -> DictConfig | None:
    """The run's ``evaluation`` with the stage's set fields over it (e.g. a larger held-out set where a
    proof needs one); None when the run has no evaluation."""
    settings = cfg.get("evaluation")
    changes = {key: value for key, value in (stage.get("evaluation") or {}).items() if value is not None}
    return OmegaConf.merge(settings, changes) if settings is not None and changes else settings


def stage_evaluation(cfg: DictConfig, model: nn.Module, stage: DictConfig, stage_dir: Path, tokenizer,
                     heldout: Sequence[str], steps_per_batch: int = 1) -> GenerationEvaluation | None:
    """The callback for a stage that trains the LLM's outputs, SFT or RL (None for a stage whose objective
    wraps the assembly, e.g. contrastive pre-training, or with ``evaluation.modes`` empty).
    ``steps_per_batch``: optimizer steps per stage step (several updates per RL rollout batch)."""
    settings = evaluation_settings(cfg, stage)
    wrapped = stage.objective is not None and stage.objective.get("_partial_", False)
    if wrapped or settings is None or not settings.modes:
        return None
    processor_config = instantiate(cfg.data.processor)(tokenizer=tokenizer,
                                                       tokens_per_group=model.resampler.tokens_per_group).config
    stops = generation_token_ids(tokenizer)["stop_token_ids"]
    corpora = {name: instantiate(cfg.data.corpora[name]) for name in heldout}

    def make_chat(assembly: nn.Module) -> Chat:
        return Chat(assembly, tokenizer, processor_config, stops)

    options = {"modes": list(settings.modes), "batch_size": int(settings.batch_size),
               "max_new_tokens": to_plain(settings.max_new_tokens)}
    return GenerationEvaluation(make_chat, HeldoutSet(corpora, int(settings.per_task), int(cfg.seed)),
                                HeldoutSet(corpora, int(settings.during_per_task), int(cfg.seed)),
                                int(settings.every_n_steps), int(stage.max_steps) * steps_per_batch, options,
                                stage_dir / PREDICTIONS_FILE)
