"""Run by ``test_fsdp_meta.py`` as ``python fsdp_meta_step.py <out_dir>``: one SGD step of the tiny model
built on the meta device and materialised per unit by FSDP (``MLLMModule.configure_model``), 2 CPU
processes over gloo. Rank r's one batch is records r and r + 2.

Writes ``rank<r>.json`` (the rank's loss, the logged gradient norm, the parameter bytes its materialiser held at most, the bytes of
its shards, the whole model's bytes) and, from rank 0, ``weights.safetensors``: the gathered weights after
the step.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from assemblies.checkpoints.official import parameters_on_meta
from assemblies.presets import compose_config
from assemblies.training.callbacks import GradNorm
from assemblies.training.config import instantiate
from assemblies.training.module import MLLMModule
from assemblies.training.sharding import UnitMaterializer, full_state_dict
from assemblies.training.strategies import fsdp
from blocks.data.dataset import ProcessedDataset, SkippingCollate
from tests.assemblies.training.conftest import FAST
from tests.assemblies.training.ddp_skipped_batch import RankBatch

LR = 0.5
SEED = 7
OPTIMIZER = {"_target_": "torch.optim.SGD", "_partial_": True}


def build():
    """(model on meta, processed dataset, pad id): the same on every rank and in the test's reference."""
    cfg = compose_config([*FAST, "paths.output_dir=/unused"])
    tokenizer = instantiate(cfg.data.tokenizer)
    with parameters_on_meta():
        model = instantiate(cfg.model)
    processor = instantiate(cfg.data.processor)(tokenizer=tokenizer, tokens_per_group=model.resampler.tokens_per_group,
                                                max_length=512)
    records = instantiate(cfg.data.corpora.scenes)(split="train", size=4, seed=0)
    return model, ProcessedDataset(records, functools.partial(processor, mode="train")), tokenizer.pad_token_id


class RecordLoss(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def main(out: Path) -> None:
    model, dataset, pad_id = build()
    total_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    materializer = UnitMaterializer(model, SEED)
    module = MLLMModule(model, optimizer=OPTIMIZER, scheduler=None, lr={"vpm": LR, "resampler": LR, "llm": LR},
                        total_steps=1, materializer=materializer)
    strategy = fsdp(tuple(dict.fromkeys((*model.layer_classes, type(model.resampler)))),
                    activation_checkpointing=False, process_group_backend="gloo")
    losses = RecordLoss()
    trainer = pl.Trainer(accelerator="cpu", devices=2, max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False, strategy=strategy, callbacks=[losses, GradNorm()])
    trainer.fit(module, train_dataloaders=DataLoader(dataset, batch_sampler=RankBatch(),
                                                     collate_fn=SkippingCollate(pad_id)))
    shard_bytes = sum(p.numel() * p.element_size() for p in module.model.parameters())
    state = full_state_dict(module.model)
    rank = trainer.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps({
        "loss": losses.losses[0], "grad_norm": float(trainer.callback_metrics["train/grad_norm"]),
        "peak_bytes": materializer.peak_bytes, "shard_bytes": shard_bytes, "total_bytes": total_bytes}))
    if rank == 0:
        save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(out / "weights.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
