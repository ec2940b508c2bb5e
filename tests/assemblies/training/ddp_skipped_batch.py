"""Run by ``test_ddp_skipped_batch.py`` as ``python ddp_skipped_batch.py <out_dir>``: one SGD step of the
tiny model under Lightning DDP, 2 CPU processes over gloo, where every sample of rank 1's micro-batch
is bad. Each rank saves its weights after the step as ``rank<r>.safetensors``.

Rank r's one batch is records r and r + 2: rank 0 trains on records 0 and 2, rank 1 gets records 1 and
3, both bad.
"""

from __future__ import annotations

import functools
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Sampler

from assemblies.presets import compose_config
from assemblies.training.config import instantiate
from assemblies.training.module import MLLMModule
from blocks.data.dataset import ProcessedDataset, SkippingCollate, first_usable
from blocks.data.errors import MediaError
from tests.assemblies.training.conftest import FAST

BAD = {1, 3}
LR = 0.5


class RankBatch(Sampler[list[int]]):
    """One batch per rank: records ``rank`` and ``rank + 2`` (the rank is known once DDP has started)."""

    def __iter__(self):
        rank = torch.distributed.get_rank()
        yield [rank, rank + 2]

    def __len__(self) -> int:
        return 1


class BadAt:
    """``records`` with the ones at ``BAD`` failing as a missing image would."""

    def __init__(self, records) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        if index in BAD:
            raise MediaError(f"bad{index}.png: file not found", where=f"d.jsonl:{index + 1}", reason="missing_file")
        return self.records[index]


def build():
    """(model, processed dataset, pad id): the same on every rank and in the test's reference."""
    cfg = compose_config([*FAST, "paths.output_dir=/unused"])
    tokenizer = instantiate(cfg.data.tokenizer)
    pl.seed_everything(0)
    model = instantiate(cfg.model)
    processor = instantiate(cfg.data.processor)(tokenizer=tokenizer, tokens_per_group=model.resampler.tokens_per_group,
                                                max_length=512)
    records = instantiate(cfg.data.corpora.scenes)(split="train", size=8, seed=0)
    return model, ProcessedDataset(BadAt(records), functools.partial(processor, mode="train")), tokenizer.pad_token_id


def main(out: Path) -> None:
    model, dataset, pad_id = build()
    loader = DataLoader(dataset, batch_sampler=RankBatch(),
                        collate_fn=SkippingCollate(pad_id, filler=first_usable(dataset, "scenes")))
    module = MLLMModule(model, optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": LR}, scheduler=None,
                        lr={"vpm": LR, "resampler": LR, "llm": LR}, total_steps=1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False,
                         strategy=DDPStrategy(process_group_backend="gloo", timeout=timedelta(seconds=60)))
    trainer.fit(module, train_dataloaders=loader)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / f"rank{trainer.global_rank}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
