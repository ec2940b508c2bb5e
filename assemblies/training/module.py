"""The LightningModule shared by pre-training and SFT: one assembly, one loss, per-task held-out metrics.

Stages differ only in data (what carries labels) and in what is trainable, both decided outside
this module, so pre-training and SFT need no separate classes.

Its hyperparameters are plain config (the model's, the optimizer's and the schedule's nodes), saved in
every checkpoint, so a checkpoint rebuilds its module with no other argument, even with
``weights_only=True``: ``MLLMModule.load_from_checkpoint("<stage>/checkpoints/last.ckpt")``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel

from assemblies.training.metrics import AnswerMetrics
from assemblies.training.config import instantiate
from assemblies.training.sharding import UnitMaterializer, fsdp_options, shard
from assemblies.training.stages import add_lora, param_groups
from blocks.batch import MultimodalBatch
from blocks.data.dataset import SkipReport

log = logging.getLogger(__name__)


def build_trained_model(model: Mapping, lora: Mapping | None = None, objective: Mapping | None = None,
                        vocab_size: int | None = None) -> nn.Module:
    """The model a stage trains, from plain config: the assembly (``model``), LoRA adapters on its LLM,
    and the stage's ``objective`` wrapper (contrastive pre-training, which needs the tokenizer's ``vocab_size``)."""
    assembly = instantiate(model)
    if lora:
        add_lora(assembly, **lora)
    return assembly if objective is None else instantiate(objective)(model=assembly, vocab_size=vocab_size)


class MLLMModule(LightningModule):
    """Trains ``model`` (the assembly: ``forward(batch) -> .loss, .logits``).

    Args:
        model: the assembly with ``vpm`` / ``resampler`` / ``llm`` blocks, already frozen by the stage;
            None builds it from ``model_config``.
        optimizer: config of a partial optimizer (``_target_``, ``_partial_: true``), called with the
            per-block param groups.
        scheduler: config of a partial ``(optimizer, total_steps) -> LRScheduler``, or None.
        lr: learning rate per block name (the stage's ``lr``).
        total_steps: optimizer steps of the stage (for the schedule).
        heldout_tasks: names of the validation dataloaders, in order (one held-out set per task).
        decode: token ids -> text, for ANLS/CER (default: no text metrics).
        weight_decay: applied to matrices only.
        model_config: what ``model`` is, as plain config (``build_trained_model``); saved, so that a
            checkpoint rebuilds the module.
        materializer: for a model built on the meta device: FSDP wraps it in ``configure_model`` and
            this materialises it unit by unit (``assemblies.training.sharding``).
    """

    not_hyperparameters: tuple[str, ...] = ()  # subclasses' init args that are objects, not config

    def __init__(self, model: nn.Module | None = None, *, optimizer: Mapping, scheduler: Mapping | None,
                 lr: dict[str, float], total_steps: int, heldout_tasks: list[str] = (),
                 decode: Callable[[list[int]], str] | None = None, weight_decay: float = 0.0,
                 model_config: Mapping | None = None, materializer: UnitMaterializer | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "decode", "materializer", *self.not_hyperparameters])
        if model is None and model_config is None:
            raise ValueError("give the model, or the model_config that builds it")
        self.model = model if model is not None else build_trained_model(**model_config)
        self.materializer = materializer
        # FSDP turns parameters into flat 1-D shards; weight decay goes by the shapes they had.
        self.param_ndims = {name: p.ndim for name, p in self.model.named_parameters()}
        self.optimizer_config, self.scheduler_config = optimizer, scheduler
        self.lr, self.total_steps, self.weight_decay = dict(lr), total_steps, weight_decay
        self.heldout_tasks = list(heldout_tasks)
        self.decode = decode or (lambda ids: " ".join(map(str, ids)))
        self.task_metrics = nn.ModuleList(AnswerMetrics() for _ in self.heldout_tasks)
        self.skips = SkipReport()

    def configure_model(self) -> None:
        if self.materializer is not None and not isinstance(self.model, FullyShardedDataParallel):
            strategy = self.trainer.strategy
            self.model = shard(self.model, self.materializer, strategy.root_device,
                               **fsdp_options(strategy, self.model))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if isinstance(self.model, FullyShardedDataParallel) and gradient_clip_val and gradient_clip_algorithm != "value":
            # The norm over all shards (Lightning refuses norm clipping under FSDP: it lacks the root module).
            self.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def transfer_batch_to_device(self, batch: MultimodalBatch, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> torch.Tensor | None:
        self.skips.update(batch)
        self.log("data/skipped", float(self.skips.skipped), reduce_fx="max", batch_size=max(batch.batch_size, 1))
        if batch.batch_size == 0:  # every record of the batch was rejected: nothing to learn from
            return None
        out = self.model(batch)
        if batch.filler:  # a stand-in for rejected records: weight 0, but every DDP rank joins the collectives
            return out.loss * 0.0
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch.batch_size)
        return out.loss

    def on_train_end(self) -> None:
        if self.skips.skipped:
            self.skips.log(log, title="training samples skipped")

    def validation_step(self, batch: MultimodalBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch.batch_size == 0:
            return
        out = self.model(batch)
        task = self.heldout_tasks[dataloader_idx]
        self.log(f"val/{task}/loss", out.loss, batch_size=batch.batch_size, add_dataloader_idx=False)
        self.update_metrics(self.task_metrics[dataloader_idx], out, batch)

    def update_metrics(self, metrics: nn.Module, out, batch: MultimodalBatch) -> None:
        """Add one held-out batch to its task's metrics: teacher-forced answers vs the labels."""
        metrics.update(out.logits, batch.labels, self.decode)

    def chance(self, data) -> dict[str, float | None]:
        """Chance accuracy per held-out task, as the corpora declare it (None when they do not)."""
        return {task: data.chance.get(task) for task in self.heldout_tasks}

    def on_validation_epoch_end(self) -> None:
        accuracies = []
        for task, metrics in zip(self.heldout_tasks, self.task_metrics):
            values = metrics.compute()
            for key, value in values.items():
                self.log(f"val/{task}/{key}", value, sync_dist=True)
            accuracies.append(values["acc"])
            metrics.reset()
        if accuracies:
            self.log("val/acc", sum(accuracies) / len(accuracies), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        # Parameters come from trainer.model: under FSDP that is the wrapped module, whose (original,
        # use_orig_params) parameters are the ones the optimizer must own.
        owned = {id(p) for p in self.trainer.model.parameters() if p.requires_grad}
        groups = param_groups(self.model, self.lr, self.weight_decay, ndims=self.param_ndims)
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) in owned]
        optimizer = instantiate(self.optimizer_config)([g for g in groups if g["params"]])
        if self.scheduler_config is None:
            return optimizer
        scheduler = instantiate(self.scheduler_config)(optimizer, total_steps=self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # Exact resume: the Python/NumPy/torch generators (LoRA dropout, augmentation in the main
    # process) travel with the checkpoint, as tensors and ints so it loads with weights_only=True.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        numpy_state = np.random.get_state(legacy=False)
        checkpoint["rng_states"] = {
            "python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "numpy_pos": int(numpy_state["state"]["pos"]),
            "numpy_gauss": (int(numpy_state["has_gauss"]), float(numpy_state["gauss"]))}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        random.setstate(states["python"])
        torch.set_rng_state(states["torch"])
        has_gauss, gauss = states["numpy_gauss"]
        np.random.set_state({"bit_generator": "MT19937", "has_gauss": has_gauss, "gauss": gauss,
                             "state": {"key": states["numpy_key"].numpy().astype(np.uint32), "pos": states["numpy_pos"]}})
