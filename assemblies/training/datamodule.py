"""The LightningDataModule over the data blocks: a weighted train mix and one held-out set per task.

Corpora are named factories ``(split, size, seed) -> Sequence[Record]`` (the synthetic corpora, the
digits set or a JSONL reader); the stage picks which ones train and with what weight. Records become
``Sample``s in the loader workers through the processor; a record the processor rejects (a
``SampleError``) is counted and logged as a skip with its reason, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from assemblies.training.sampling import MixtureBatchSampler
from blocks.batch import MultimodalBatch, Sample, collate
from blocks.data.errors import SampleError
from blocks.data.record import Record

log = logging.getLogger(__name__)
CorpusFactory = Callable[..., Sequence[Record]]


class ProcessedRecords(Dataset):
    """``records[i]`` through ``process``; a rejected record yields ``(record id, reason)`` instead."""

    def __init__(self, records: Sequence[Record], process: Callable[[Record], Sample]) -> None:
        self.records, self.process = records, process

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample | tuple[str, str]:
        record = self.records[index]
        try:
            return self.process(record)
        except SampleError as error:
            return (record.id, f"{error.reason}: {error}")


class BatchCollator:
    """Picklable collate function: drops rejected records into ``MultimodalBatch.skipped``."""

    def __init__(self, pad_id: int, padding_side: str = "right") -> None:
        self.pad_id, self.padding_side = pad_id, padding_side

    def __call__(self, items: list[Sample | tuple[str, str]]) -> MultimodalBatch | None:
        samples = [item for item in items if isinstance(item, Sample)]
        skipped = [item for item in items if not isinstance(item, Sample)]
        if not samples:
            log.warning("every sample of a batch was rejected: %s", skipped)
            return None
        return collate(samples, self.pad_id, self.padding_side, skipped=skipped)


class MultimodalDataModule(LightningDataModule):
    """Train mix + held-out sets per task.

    Args:
        corpora: name -> factory called as ``factory(split=, size=, seed=)``.
        process: record -> Sample for training (the processor with ``train=True``).
        pad_id: the tokenizer's padding id.
        mix: corpus name -> sampling weight for this stage.
        heldout: corpus names evaluated; each is split into one validation set per ``record.task``.
        num_batches: training batches of the stage (max_steps x gradient accumulation).
        batch_size: samples per training batch.
        train_size: records per training corpus (sampled with replacement by the mixture).
        heldout_size: records per held-out corpus.
        eval_batch_size: samples per validation batch.
        num_workers: loader worker processes.
        seed: data seed (train and held-out streams differ by split).
    """

    def __init__(self, corpora: dict[str, CorpusFactory], process: Callable[[Record], Sample], pad_id: int,
                 mix: dict[str, float], heldout: Sequence[str], num_batches: int, batch_size: int = 8,
                 train_size: int = 100_000, heldout_size: int = 64, eval_batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        unknown = sorted(set(mix) - set(corpora)) + sorted(set(heldout) - set(corpora))
        if unknown:
            raise ValueError(f"stage data names unknown corpora {unknown}; known: {sorted(corpora)}")
        self.corpora, self.process, self.pad_id = corpora, process, pad_id
        self.mix = {name: float(w) for name, w in mix.items() if w > 0}
        self.heldout_names = list(heldout)
        self.num_batches, self.batch_size, self.train_size = num_batches, batch_size, train_size
        self.heldout_size, self.eval_batch_size = heldout_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.heldout_tasks: list[str] = []
        self.chance: dict[str, float] = {}  # task -> chance accuracy, when the corpus declares it
        self._heldout_sets: list[Dataset] = []
        self._train: ConcatDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            self._train = ConcatDataset([ProcessedRecords(self.corpora[name](split="train", size=self.train_size,
                                                                             seed=self.seed), self.process)
                                         for name in self.mix])
        if not self._heldout_sets:
            self._build_heldout()

    def _build_heldout(self) -> None:
        """One validation set per task, in first-seen order, from each held-out corpus."""
        for name in self.heldout_names:
            records = self.corpora[name](split="heldout", size=self.heldout_size, seed=self.seed)
            self.chance.update(getattr(records, "chance", {}))
            by_task: dict[str, list[int]] = {}
            for index in range(len(records)):
                by_task.setdefault(records[index].task or name, []).append(index)
            dataset = ProcessedRecords(records, self.process)
            for task, indices in by_task.items():
                self.heldout_tasks.append(task)
                self._heldout_sets.append(Subset(dataset, indices))

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, collate_fn=BatchCollator(self.pad_id), num_workers=self.num_workers,
                          persistent_workers=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        # A resumed run restarts the stage's single epoch: skip the batches already trained on.
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
        sampler = MixtureBatchSampler([len(d) for d in self._train.datasets], list(self.mix.values()),
                                      self.batch_size, self.num_batches, seed=self.seed,
                                      rank=trainer.global_rank if trainer else 0,
                                      world_size=trainer.world_size if trainer else 1, start_step=start)
        return self._loader(self._train, batch_sampler=sampler)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(d, batch_size=self.eval_batch_size, shuffle=False) for d in self._heldout_sets]
