"""The RLAIF-V stage: DPO on preference pairs the policy makes from its own samples at stage start.

At the start of the stage (``build_preferences``, cached in ``<stage>/preferences.json`` so a
resumed stage reuses them): prompts are drawn from the stage's ``data.mix``, N responses sampled per
prompt, claims checked against the scenes' ground truth, pairs built, reference log-probs computed
with the stage-start weights, and the held-out contradiction rate measured (greedy). Each step
then trains sigmoid DPO on ``batch_size`` pairs; at the end the held-out rate is measured again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from assemblies.training.config import resolve_target
from assemblies.training.datamodule import MultimodalDataModule
from assemblies.training.module import MLLMModule
from assemblies.training.preferences import (Preference, PreferenceSet, contradictions, pair_logprobs,
                                             process_prompts, sample_preferences)
from assemblies.training.rl_data import WrappedBatch
from assemblies.training.sampling import MixtureBatchSampler
from blocks.batch import Sample, collate
from blocks.data.record import Record
from blocks.generation import GenerationConfig
from blocks.rl import dpo_loss

log = logging.getLogger(__name__)
PREFERENCES_FILE = "preferences.json"


@dataclass
class DpoObjective:
    """The settings of a DPO stage (``objective:`` of ``conf/stage/rlaif_dpo.yaml``); pairs per step are
    the stage's ``batch_size``, prompts come from its ``data.mix``.

    Args:
        beta, length_normalise, sft_weight: of ``blocks.rl.dpo_loss`` (paper: beta 0.1).
        mode: the mode responses are sampled in (``short`` / ``long``).
        prompts: prompts sampled at stage start; samples_per_prompt: N responses each.
        temperature, max_new_tokens: of the sampling (the same for every response: deconfounded).
        pairs_per_prompt, min_gap, max_word_gap: of ``blocks.rl.build_pairs``.
        heldout_prompts: held-out prompts whose greedy descriptions are checked before and after.
        chunk_prompts: prompts per engine call while sampling (bounds the KV cache).
        checker: dotted path of ``record -> ResponseChecker`` (the slot; default: the built-in scenes'
            ground truth, ``blocks.rl.scene_checker``).
    """

    beta: float = 0.1
    length_normalise: bool = False
    sft_weight: float = 0.0
    mode: str = "short"
    prompts: int = 512
    samples_per_prompt: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 512
    pairs_per_prompt: int = 2
    min_gap: int = 1
    max_word_gap: int | None = None
    heldout_prompts: int = 128
    chunk_prompts: int = 64
    checker: str = "blocks.rl.scene_checker"

    def sampling(self, ids: Mapping, seed: int) -> GenerationConfig:
        return GenerationConfig(**ids, do_sample=True, temperature=self.temperature, num_samples=self.samples_per_prompt,
                                seed=seed, max_new_tokens=self.max_new_tokens)

    def greedy(self, ids: Mapping) -> GenerationConfig:
        return GenerationConfig(**ids, max_new_tokens=self.max_new_tokens)


def draw_records(corpora: Mapping[str, Callable], mix: Mapping[str, float], split: str, count: int,
                 seed: int) -> list[Record]:
    """``count`` records of ``split`` drawn from the ``mix`` corpora by weight (one mixture batch)."""
    sources = ConcatDataset([corpora[name](split=split, size=max(count, 1), seed=seed) for name in mix])
    sampler = MixtureBatchSampler([len(d) for d in sources.datasets], list(mix.values()), count, 1, seed=seed)
    return [sources[i] for i in sampler.batch(0)]


class PreferenceSource:
    """The DPO stage's pairs: made by ``ensure(model)`` with the weights the stage starts from, once the
    model is on its device (``DpoModule.on_fit_start``), or read back from the stage's cache file
    (a resumed stage). Each data-parallel rank draws its own prompts and keeps its own file.

    ``measure(model)``: greedy descriptions of the held-out prompts, checked (contradiction stats).
    """

    def __init__(self, objective: DpoObjective, corpora: Mapping[str, Callable], mix: Mapping[str, float],
                 process: Callable[[Record], Sample], tokenizer, ids: Mapping, stage_dir: Path, seed: int) -> None:
        self.objective, self.corpora, self.mix, self.process = objective, corpora, dict(mix), process
        self.tokenizer, self.ids, self.stage_dir, self.seed = tokenizer, dict(ids), stage_dir, seed
        self.checker = resolve_target(objective.checker)
        self.heldout = draw_records(corpora, mix, "heldout", objective.heldout_prompts, seed)
        self.preferences: PreferenceSet | None = None
        self.samples: list[Sample] = []

    @property
    def empty(self) -> bool:
        """Made, and not one pair among them."""
        return self.preferences is not None and not self.preferences.pairs

    def measure(self, model) -> dict[str, float]:
        o = self.objective
        return contradictions(model, self.heldout, self.process, self.tokenizer, o.greedy(self.ids), o.mode,
                              self.checker, o.chunk_prompts)

    def ensure(self, model, rank: int = 0) -> PreferenceSet:
        o, seed = self.objective, self.seed * 1_000 + rank
        records = draw_records(self.corpora, self.mix, "train", o.prompts, seed)
        kept, self.samples = process_prompts(records, self.process)
        cache = self.stage_dir / (PREFERENCES_FILE if rank == 0 else f"preferences.rank{rank}.json")
        if cache.is_file():
            log.info("DPO: reusing the pairs of %s", cache)
            self.preferences = PreferenceSet.load(cache)
            return self.preferences
        self.preferences = sample_preferences(model, [records[i] for i in kept], self.samples, o.sampling(self.ids, seed),
                                              self.tokenizer, o.mode, self.checker, o.chunk_prompts,
                                              max_pairs=o.pairs_per_prompt, min_gap=o.min_gap,
                                              max_word_gap=o.max_word_gap)
        self.preferences.stats["skipped_prompts"] = o.prompts - len(kept)
        self.preferences.stats["heldout_before"] = self.measure(model)
        if not self.preferences.pairs:
            log.warning("DPO: no preference pair among %d responses to each of %d prompts (%s): nothing to train on",
                        o.samples_per_prompt, len(self.samples), self.preferences.stats)
        self.preferences.save(cache)
        return self.preferences


@dataclass
class PairBatch(WrappedBatch):
    """``batch``: the pairs' prompts (left padded, row p = pair p); ``pairs``: chosen / rejected and references."""

    pairs: list[Preference]

    def to(self, device) -> "PairBatch":
        return PairBatch(self.batch.to(device), self.pairs)


class _Pairs(Dataset):
    def __init__(self, pairs: Sequence[Preference], prompts: Sequence[Sample]) -> None:
        self.pairs, self.prompts = pairs, prompts

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Sample, Preference]:
        return self.prompts[self.pairs[index].record], self.pairs[index]


class _PairSampler(Sampler[list[int]]):
    """Step ``s`` draws ``batch_size`` distinct pairs from ``rng(seed, s)``: a resumed stage draws the same."""

    def __init__(self, pairs: int, batch_size: int, num_batches: int, seed: int, start_step: int) -> None:
        self.pairs, self.batch_size, self.num_batches = pairs, min(batch_size, pairs), num_batches
        self.seed, self.start_step = seed, start_step

    def __iter__(self):
        for step in range(self.start_step, self.num_batches):
            rng = np.random.default_rng([self.seed, step])
            yield rng.choice(self.pairs, size=self.batch_size, replace=False).tolist()

    def __len__(self) -> int:
        return self.num_batches  # the whole stage, also when resuming (as MixtureBatchSampler)


class PreferenceDataModule(MultimodalDataModule):
    """Training batches of preference pairs (``PairBatch``) from ``source`` (made before the first batch);
    held-out sets as in ``MultimodalDataModule``."""

    def __init__(self, *args, source: PreferenceSource, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.source = source

    @property
    def empty(self) -> bool:
        """No pair to train on (the stage then passes the weights through unchanged)."""
        return self.source.empty

    def setup(self, stage: str | None = None) -> None:
        if not self._heldout_sets:
            self._build_heldout()

    def train_dataloader(self) -> DataLoader:
        pairs = self.source.preferences.pairs
        start = self.trainer.global_step if self.trainer else 0
        sampler = _PairSampler(len(pairs), self.batch_size, self.num_batches, self.seed, start)
        pad = self.pad_id
        return DataLoader(_Pairs(pairs, self.source.samples), batch_sampler=sampler,
                          collate_fn=lambda items: PairBatch(collate([s for s, _ in items], pad, padding_side="left"),
                                                             [p for _, p in items]))


class DpoModule(MLLMModule):
    """Sigmoid DPO over the assembly; held-out evaluation, optimisers and RNG resume are ``MLLMModule``'s.

    Extra args:
        objective: the stage's ``DpoObjective``.
        pad_id: padding id of completions.
        source: the pairs, made (or read) when fitting starts; the held-out contradiction stats are
            measured then and when training ends.
    """

    not_hyperparameters = ("objective", "source")

    def __init__(self, *args, objective: DpoObjective, pad_id: int, source: PreferenceSource, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.objective, self.pad_id, self.source = objective, pad_id, source
        self.stage_metrics: dict = {}

    def on_fit_start(self) -> None:
        with full_parameters(self.trainer):
            preferences = self.source.ensure(self.model, self.global_rank)
        self.stage_metrics.update(preferences={k: v for k, v in preferences.stats.items() if k != "heldout_before"},
                                  heldout_before=preferences.stats.get("heldout_before"))
        if self.source.empty:
            self.trainer.should_stop = True  # nothing to learn: the stage keeps its starting weights

    def transfer_batch_to_device(self, batch: PairBatch, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    def training_step(self, batch: PairBatch, batch_idx: int) -> Tensor:
        sums, counts = pair_logprobs(self.model, batch.batch, batch.pairs, self.pad_id)
        reference = torch.tensor([[p.reference_chosen, p.reference_rejected] for p in batch.pairs], device=sums.device)
        o = self.objective
        out = dpo_loss(sums[0::2], sums[1::2], reference[:, 0], reference[:, 1], beta=o.beta,
                       chosen_tokens=counts[0::2], rejected_tokens=counts[1::2], length_normalise=o.length_normalise,
                       sft_weight=o.sft_weight)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch.batch_size)
        self.log_dict({f"dpo/{k}": float(v) for k, v in out.stats.items()}, batch_size=batch.batch_size)
        return out.loss

    def on_train_end(self) -> None:
        super().on_train_end()
        if self.source.empty:
            return
        with full_parameters(self.trainer):
            self.stage_metrics["heldout_after"] = self.source.measure(self.model)
            log.info("DPO held-out contradictions: before %s, after %s", self.stage_metrics["heldout_before"],
                     self.stage_metrics["heldout_after"])


def full_parameters(trainer):
    """Outside the model's forward, FSDP keeps the parameters sharded: gather them for generation (a
    no-op context under other strategies)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if isinstance(trainer.strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)
    return contextlib.nullcontext()
