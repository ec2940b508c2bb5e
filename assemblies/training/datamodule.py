"""The LightningDataModule over the data blocks: a weighted train mix and one held-out set per task.

Corpora are named factories ``(split, size, seed) -> Sequence[Record]`` (the synthetic corpora, the
digits set or a JSONL reader); the stage picks which ones train and with what weight. Records become
``Sample``s in the loader workers through the processor (``blocks.data.dataset``); a record the
processor rejects is a counted, logged skip that travels in ``MultimodalBatch.skipped``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from assemblies.training.sampling import MixtureBatchSampler
from blocks.batch import Sample
from blocks.data.batching import TokenCounts, measure_lengths
from blocks.data.dataset import ProcessedDataset, SkippingCollate, first_usable
from blocks.data.errors import SampleError
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.record import Record

log = logging.getLogger(__name__)
CorpusFactory = Callable[..., Sequence[Record]]


def build_processor(tokenizer, tokens_per_group, max_length: int | None = None, checkpoint: str | None = None,
                    **options) -> MiniCPMVProcessor:
    """The processor for a stage: ``options`` are ``ProcessorConfig`` fields (from ``data.processor``).

    ``checkpoint``: start from the settings of that official-format directory (its preprocessor_config.json);
    an option set to None keeps the checkpoint's value.
    """
    base = ProcessorConfig.from_checkpoint(checkpoint) if checkpoint else ProcessorConfig()
    options = {name: value for name, value in options.items() if value is not None}
    return MiniCPMVProcessor(tokenizer, replace(base, tokens_per_group=tokens_per_group, max_length=max_length,
                                                **options))


def _task_of(records: Sequence[Record], index: int) -> str:
    """The record's task; a record that cannot be read stays in the set, to be skipped (and counted) there."""
    try:
        return records[index].task
    except SampleError:
        return ""


class MultimodalDataModule(LightningDataModule):
    """Train mix + held-out sets per task.

    Args:
        corpora: name -> factory called as ``factory(split=, size=, seed=)``.
        process: record -> Sample for training (the processor in ``mode="train"``).
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
        max_tokens: padded-token budget per training batch (``batch_size`` caps it), checked against
            the real token count of every sample the stage draws (counted once before training, in
            the loader workers, by ``count_tokens``).
        count_tokens: record -> its token count, without building the sample (the processor's
            ``count_tokens``); default: build the sample with ``process`` and count.
    """

    def __init__(self, corpora: dict[str, CorpusFactory], process: Callable[[Record], Sample], pad_id: int,
                 mix: dict[str, float], heldout: Sequence[str], num_batches: int, batch_size: int = 8,
                 train_size: int = 100_000, heldout_size: int = 64, eval_batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, max_tokens: int | None = None,
                 count_tokens: Callable[[Record], int] | None = None) -> None:
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
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens or functools.partial(_processed_length, process)
        self.heldout_tasks: list[str] = []
        self.chance: dict[str, float] = {}  # task -> chance accuracy, when the corpus declares it
        self._heldout_sets: list[Dataset] = []
        self._train: ConcatDataset | None = None
        self._filler: Sample | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            datasets = [ProcessedDataset(self.corpora[name](split="train", size=self.train_size, seed=self.seed),
                                         self.process) for name in self.mix]
            # A corpus none of whose samples builds stops the run here, with the reasons; the first usable
            # sample stands in, with weight 0, for a micro-batch whose samples were all skipped.
            self._filler = [first_usable(dataset, name) for dataset, name in zip(datasets, self.mix)][0]
            self._train = ConcatDataset(datasets)
        if not self._heldout_sets:
            self._build_heldout()

    def _measure(self, sampler: MixtureBatchSampler) -> None:
        """Give ``sampler`` the real token count of every item it may draw (per corpus, in the workers)."""
        lengths = []
        for dataset, items in zip(self._train.datasets, sampler.candidates()):
            counts = TokenCounts(dataset.source, self.count_tokens)
            lengths.append(dict(zip(items, measure_lengths(Subset(counts, items), num_workers=self.num_workers))))
        sampler.set_lengths(lengths)
        log.info("token budget %d: measured %d drawn samples", self.max_tokens, sum(len(x) for x in lengths))

    def _build_heldout(self) -> None:
        """One validation set per task, in first-seen order, from each held-out corpus."""
        for name in self.heldout_names:
            records = self.corpora[name](split="heldout", size=self.heldout_size, seed=self.seed)
            self.chance.update(getattr(records, "chance", {}))
            by_task: dict[str, list[int]] = {}
            for index in range(len(records)):
                by_task.setdefault(_task_of(records, index) or name, []).append(index)
            dataset = ProcessedDataset(records, self.process)
            for task, indices in by_task.items():
                self.heldout_tasks.append(task)
                self._heldout_sets.append(Subset(dataset, indices))

    def _loader(self, dataset: Dataset, filler: Sample | None = None, **kwargs) -> DataLoader:
        return DataLoader(dataset, collate_fn=SkippingCollate(self.pad_id, filler=filler), num_workers=self.num_workers,
                          persistent_workers=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        # A resumed run restarts the stage's single epoch: skip the batches already trained on.
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
        sampler = MixtureBatchSampler([len(d) for d in self._train.datasets], list(self.mix.values()),
                                      self.batch_size, self.num_batches, seed=self.seed,
                                      rank=trainer.global_rank if trainer else 0,
                                      world_size=trainer.world_size if trainer else 1, start_step=start,
                                      max_tokens=self.max_tokens)
        if self.max_tokens:
            self._measure(sampler)
        return self._loader(self._train, filler=self._filler, batch_sampler=sampler)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(d, batch_size=self.eval_batch_size, shuffle=False) for d in self._heldout_sets]


def _processed_length(process: Callable[[Record], Sample], record: Record) -> int:
    return process(record).num_tokens
