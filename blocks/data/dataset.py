"""Record source + processor -> samples, with bad samples turned into counted skips.

The flow (DataLoader workers included)::

    source[i] (a Record: JSON reader, synthetic corpus, list)  --processor-->  Sample
        any SampleError (bad file, bad entry, SampleTooLong, ...) --> Skip(sample_id, reason, message)
    SkippingCollate: drops the Skips, packs the rest (``blocks.batch.collate``), and lists the
        dropped ``(sample_id, reason)`` pairs in ``MultimodalBatch.skipped``
    SkipReport (main process): ``update(batch)`` per step, ``log()`` a table at epoch end.

The official trainer instead retries a random other index on any exception, which hides broken data
and can recurse forever; here every skip is counted by reason and logged with its file:line once.
``strict=True`` raises instead (for validating a new dataset).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch.utils.data import Dataset

from blocks.batch import MultimodalBatch, Sample, collate
from blocks.data.errors import SampleError
from blocks.data.record import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skip:
    """A sample that could not be built: its id, a short reason (the error's ``reason``) and the full message."""

    sample_id: str
    reason: str
    message: str


class ProcessedDataset(Dataset):
    """Map-style dataset: ``source[i]`` (a ``Record``) through ``processor`` into a ``Sample``.

    Args:
        source: anything with ``__len__`` and ``__getitem__(i) -> Record`` (a list, an
            ``OfficialJsonDataset``, a synthetic corpus).
        processor: ``processor(record) -> Sample``; raises ``SampleError`` for a bad sample.
        strict: raise on a bad sample instead of returning a ``Skip``.

    Returns from ``__getitem__``: a ``Sample``, or a ``Skip`` for a bad one (logged once, here).
    """

    def __init__(self, source: Sequence[Record], processor: Callable[[Record], Sample], strict: bool = False) -> None:
        self.source, self.processor, self.strict = source, processor, strict

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample | Skip:
        item = self.build(index)
        if isinstance(item, Skip):
            log.warning("skipping sample %s (%s): %s", item.sample_id, item.reason, item.message)
        return item

    def build(self, index: int) -> Sample | Skip:
        """``self[index]`` without logging the skip."""
        sample_id = f"#{index}"
        try:
            record = self.source[index]
            sample_id = record.id or sample_id
            sample = self.processor(record)
            if not sample.sample_id:
                sample.sample_id = sample_id
            return sample
        except SampleError as error:
            if self.strict:
                raise
            return Skip(error.sample_id or error.where or sample_id, error.reason, str(error))
        except Exception as error:  # noqa: BLE001 - a bug must not kill a day-long run, but it is counted and logged
            if self.strict:
                raise
            log.exception("unexpected error building sample %s", sample_id)
            return Skip(sample_id, f"unexpected {type(error).__name__}", f"{type(error).__name__}: {error}")


def first_usable(dataset: ProcessedDataset, name: str) -> Sample:
    """The first sample of ``dataset`` that builds; processing stops there, so good data costs one sample.

    Raises:
        SampleError: every sample is skipped (``no_samples``, with the table of reasons): a run stops
            before its first step instead of training on nothing.
    """
    report = SkipReport()
    for index in range(len(dataset)):
        item = dataset.build(index)
        if isinstance(item, Sample):
            return item
        report.add(item.sample_id, item.reason)
    raise SampleError(f"no usable samples in corpus {name!r}: all {len(dataset)} were skipped\n{report.table()}",
                      where=name, reason="no_samples")


class SkippingCollate:
    """``collate_fn`` that drops ``Skip``s and records them in the batch.

    A batch whose samples were all skipped comes out as ``filler`` (one usable sample, e.g. from
    ``first_usable``) marked ``MultimodalBatch.filler``, to be trained with weight 0 so that every
    data-parallel rank still joins the gradient collectives; without a filler, with batch size 0 (no
    text, no media). Either way ``skipped`` is filled, so the skips are still counted. Picklable, so it
    works in DataLoader worker processes.
    """

    def __init__(self, pad_id: int, padding_side: str = "right", pad_to_multiple_of: int = 1,
                 patch_dim: int = 3 * 14 * 14, filler: Sample | None = None) -> None:
        self.pad_id, self.padding_side = pad_id, padding_side
        self.pad_to_multiple_of, self.patch_dim, self.filler = pad_to_multiple_of, patch_dim, filler

    def __call__(self, items: Sequence[Sample | Skip]) -> MultimodalBatch:
        samples = [item for item in items if isinstance(item, Sample)]
        skipped = [(item.sample_id, item.reason) for item in items if isinstance(item, Skip)]
        if samples:
            return collate(samples, self.pad_id, self.padding_side, self.pad_to_multiple_of, skipped=skipped)
        if self.filler is not None:
            return replace(collate([self.filler], self.pad_id, self.padding_side, self.pad_to_multiple_of),
                           skipped=skipped, filler=True)
        return empty_batch(skipped, self.patch_dim)


def empty_batch(skipped: Sequence[tuple[str, str]], patch_dim: int = 3 * 14 * 14) -> MultimodalBatch:
    """A batch of 0 samples that only carries ``skipped``."""
    long = torch.zeros(0, dtype=torch.long)
    return MultimodalBatch(
        input_ids=torch.zeros(0, 0, dtype=torch.long), attention_mask=torch.zeros(0, 0, dtype=torch.bool),
        labels=torch.zeros(0, 0, dtype=torch.long), patches=torch.zeros(0, patch_dim),
        tgt_sizes=torch.zeros(0, 2, dtype=torch.long), temporal_ids=long, group_sizes=long.clone(),
        image_bound=torch.zeros(0, 3, dtype=torch.long), sample_ids=[], skipped=list(skipped))


@dataclass
class SkipReport:
    """Counts used and skipped samples by reason across batches (main process).

    ``update(batch)`` after each step, ``log()`` (or ``table()``) at the end of an epoch, then
    ``reset()``. ``merge`` sums reports from several ranks (e.g. after ``all_gather_object``).
    """

    max_examples: int = 5
    used: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def update(self, batch: MultimodalBatch) -> None:
        self.used += 0 if batch.filler else batch.batch_size
        for sample_id, reason in batch.skipped:
            self.add(sample_id, reason)

    def add(self, sample_id: str, reason: str) -> None:
        """Count one skipped sample."""
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(sample_id)

    def merge(self, other: "SkipReport") -> None:
        self.used += other.used
        self.counts.update(other.counts)
        for reason, ids in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ids[: self.max_examples - len(mine)])

    def reset(self) -> None:
        self.used, self.counts, self.examples = 0, Counter(), {}

    def table(self) -> str:
        """A plain-text table: one row per reason (most frequent first), count, share, example ids."""
        total = self.used + self.skipped
        lines = [f"samples: {total} seen, {self.used} used, {self.skipped} skipped"
                 f" ({100.0 * self.skipped / max(total, 1):.2f} %)"]
        if self.counts:
            width = max(len("reason"), *(len(r) for r in self.counts))
            lines.append(f"{'reason':<{width}}  {'count':>7}  {'share':>7}  examples")
            for reason, count in self.counts.most_common():
                share = f"{100.0 * count / max(total, 1):.2f} %"
                lines.append(f"{reason:<{width}}  {count:>7}  {share:>7}  {', '.join(self.examples.get(reason, []))}")
        return "\n".join(lines)

    def log(self, logger: logging.Logger = log, title: str = "skip report") -> None:
        (logger.warning if self.counts else logger.info)("%s\n%s", title, self.table())
