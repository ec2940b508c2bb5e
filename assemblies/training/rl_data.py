"""Prompts for the RL stages: records -> generation prompts in the mode each prompt is given.

A step's prompts are drawn like any stage's batch (``MixtureBatchSampler``: a pure function of seed,
step and rank), and ``ModeScheduler`` gives each one its mode, also a pure function of the step; the
batch sampler hands ``(index, mode)`` pairs to the dataset, so a loader worker builds each prompt
once, in its mode, and a resumed stage sees the same prompts in the same modes.

A prompt carries what the rewards need: the reference answer (``record.answer``, else the last
assistant turn with any reasoning removed), the task and the record's meta with
``meta["verifier"]`` set from the stage's ``data.verifier`` (corpus -> verifier kind, default
``auto``; ``rlpr`` routes a corpus of free-form answers to the probability reward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from assemblies.training.datamodule import MultimodalDataModule
from assemblies.training.sampling import MixtureBatchSampler
from blocks.answers import THINK_CLOSE, Mode
from blocks.batch import MultimodalBatch, Sample
from blocks.data.dataset import Skip, SkippingCollate
from blocks.data.errors import SampleError
from blocks.data.record import Record
from blocks.rl import ModeScheduler
from blocks.rl.rewards import VERIFIER_KINDS

log = logging.getLogger(__name__)


def reference_answer(record: Record) -> str | None:
    """The answer a rollout is scored against: ``record.answer``, else the last assistant turn after
    its ``</think>`` (official-format data keeps the reference there); None when there is neither."""
    if record.answer is not None:
        return record.answer
    turns = [t for t in record.conversations if t.get("role") == "assistant"]
    if not turns:
        return None
    return (turns[-1].get("content") or "").rpartition(THINK_CLOSE)[2].strip() or None


@dataclass
class RLPrompt:
    """One generation prompt (``sample``, inference mode, no labels) with its ``mode`` and what the
    rewards and claim checks read: ``reference``, ``task``, ``meta`` (the record's, with ``verifier``)."""

    sample: Sample
    mode: Mode
    reference: str | None
    task: str
    meta: dict = field(default_factory=dict)
    record_id: str = ""


class PromptDataset(Dataset):
    """``dataset[(index, mode)]`` -> the ``RLPrompt`` of record ``index`` of the concatenated corpora,
    or a ``Skip`` (logged) when the processor rejects it.

    Args:
        corpora: the stage's corpora in mix order.
        names: their names (for ``verifiers``).
        processors: mode -> ``record -> Sample`` (the processor in inference mode, thinking on for ``long``).
        verifiers: corpus name -> verifier kind (``blocks.rl.rewards.VERIFIER_KINDS``); default ``auto``.
    """

    def __init__(self, corpora: Sequence[Sequence[Record]], names: Sequence[str],
                 processors: Mapping[str, Callable[[Record], Sample]], verifiers: Mapping[str, str] | None = None) -> None:
        verifiers = dict(verifiers or {})
        bad = {name: kind for name, kind in verifiers.items() if kind not in VERIFIER_KINDS}
        if bad:
            raise ValueError(f"data.verifier: unknown kinds {bad}; choose from {VERIFIER_KINDS}")
        self.records = ConcatDataset(corpora)
        self.kinds = [verifiers.get(name, "auto") for name in names]
        self.processors = dict(processors)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, str]) -> RLPrompt | Skip:
        index, mode = item
        sample_id = f"#{index}"
        try:
            record = self.records[index]
            sample_id = record.id or sample_id
            sample = self.processors[mode](record)
            corpus = next(k for k, end in enumerate(self.records.cumulative_sizes) if index < end)
            meta = {**record.meta, "verifier": record.meta.get("verifier", self.kinds[corpus])}
            return RLPrompt(sample, mode, reference_answer(record), record.task, meta, sample_id)
        except SampleError as error:
            skip = Skip(error.sample_id or sample_id, error.reason, str(error))
        except Exception as error:  # noqa: BLE001 -- counted and logged, as in ProcessedDataset
            skip = Skip(sample_id, f"unexpected {type(error).__name__}", f"{type(error).__name__}: {error}")
        log.warning("skipping RL prompt %s (%s): %s", skip.sample_id, skip.reason, skip.message)
        return skip


@dataclass
class WrappedBatch:
    """A ``MultimodalBatch`` of prompts (``batch``) with per-row extras in subclasses; what the training
    loop and the skip counting read of a batch (size, mask, DDP filler) comes from ``batch``."""

    batch: MultimodalBatch

    @property
    def batch_size(self) -> int:
        return self.batch.batch_size

    @property
    def attention_mask(self) -> Tensor:
        return self.batch.attention_mask

    @property
    def filler(self) -> bool:
        return self.batch.filler


@dataclass
class PromptBatch(WrappedBatch):
    """A step's prompts: ``batch`` (left padded, no labels) and one ``RLPrompt`` per row (their
    ``sample`` fields are dropped once collated); ``skipped`` as in ``MultimodalBatch``."""

    prompts: list[RLPrompt]

    @property
    def modes(self) -> list[Mode]:
        return [p.mode for p in self.prompts]

    def to(self, device) -> "PromptBatch":
        return PromptBatch(self.batch.to(device), self.prompts)


class PromptCollate:
    """``collate_fn``: left-padded prompts (for generation) plus their ``RLPrompt`` records; skips counted."""

    def __init__(self, pad_id: int, patch_dim: int = 3 * 14 * 14) -> None:
        self.collate = SkippingCollate(pad_id, padding_side="left", patch_dim=patch_dim)

    def __call__(self, items: Sequence[RLPrompt | Skip]) -> PromptBatch:
        prompts = [item for item in items if isinstance(item, RLPrompt)]
        batch = self.collate([p.sample for p in prompts] + [i for i in items if isinstance(i, Skip)])
        return PromptBatch(batch, [RLPrompt(None, p.mode, p.reference, p.task, p.meta, p.record_id)  # type: ignore[arg-type]
                                   for p in prompts])


class ModedBatchSampler(Sampler[list[tuple[int, str]]]):
    """``MixtureBatchSampler``'s batches with each index paired with its mode from ``scheduler``.

    Ranks draw their modes from separate steps of the scheduler's stream (``step * world_size + rank``).
    """

    def __init__(self, inner: MixtureBatchSampler, scheduler: ModeScheduler) -> None:
        self.inner, self.scheduler = inner, scheduler

    def batch(self, step: int) -> list[tuple[int, str]]:
        indices = self.inner.batch(step)
        modes = self.scheduler.modes(step * self.inner.world_size + self.inner.rank, len(indices))
        return list(zip(indices, modes))

    def __iter__(self) -> Iterator[list[tuple[int, str]]]:
        return (self.batch(step) for step in range(self.inner.start_step, self.inner.num_batches))

    def __len__(self) -> int:
        return len(self.inner)


class PromptDataModule(MultimodalDataModule):
    """``MultimodalDataModule`` whose training batches are ``PromptBatch``es (held-out sets unchanged).

    Extra args:
        prompt_processors: mode -> ``record -> Sample`` in inference mode.
        scheduler: the stage's ``ModeScheduler``.
        verifiers: corpus name -> verifier kind (``data.verifier`` of the stage).
        steps_per_batch: optimizer steps per prompt batch (several updates per rollout batch), so a
            resumed stage restarts at prompt batch ``global_step // steps_per_batch``.
    """

    def __init__(self, *args, prompt_processors: Mapping[str, Callable[[Record], Sample]],
                 scheduler: ModeScheduler, verifiers: Mapping[str, str] | None = None, steps_per_batch: int = 1,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_processors, self.scheduler = dict(prompt_processors), scheduler
        self.verifiers, self.steps_per_batch = dict(verifiers or {}), steps_per_batch
        unknown = sorted(set(self.verifiers) - set(self.corpora))
        if unknown:
            raise ValueError(f"data.verifier names unknown corpora {unknown}; known: {sorted(self.corpora)}")
        self._prompts: PromptDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._prompts is None:
            corpora = [self.corpora[name](split="train", size=self.train_size, seed=self.seed) for name in self.mix]
            self._prompts = PromptDataset(corpora, list(self.mix), self.prompt_processors, self.verifiers)
        if not self._heldout_sets:
            self._build_heldout()

    def prompt_sampler(self, start_step: int = 0, rank: int = 0, world_size: int = 1) -> ModedBatchSampler:
        """Prompt batches from ``start_step`` on (the stage's whole stream)."""
        sizes = [len(d) for d in self._prompts.records.datasets]
        inner = MixtureBatchSampler(sizes, list(self.mix.values()), self.batch_size, self.num_batches, seed=self.seed,
                                    rank=rank, world_size=world_size, start_step=start_step)
        return ModedBatchSampler(inner, self.scheduler)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step // self.steps_per_batch if trainer else 0
        sampler = self.prompt_sampler(start, trainer.global_rank if trainer else 0, trainer.world_size if trainer else 1)
        return DataLoader(self._prompts, batch_sampler=sampler, collate_fn=PromptCollate(self.pad_id),
                          num_workers=self.num_workers, persistent_workers=False)
