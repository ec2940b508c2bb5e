"""The GRPO stage (hybrid RL): rollouts in short and long modes, rewards, group advantages, clipped loss.

One training step = one batch of prompts (``stage.batch_size``; the modes come with them from the
data module): G samples per prompt through the KV-cached engine, rewards by the combiner (rule
verifiers or RLPR for R_acc, format, repetition), group-relative advantages (zero-variance groups
dropped and counted), then ``updates_per_batch`` optimizer steps of the clipped policy loss on that
batch (manual optimisation; the first update's log-probs are the sampling policy's, ratio 1). No
KL and no entropy term, so no reference model is held. See docs/rl.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from assemblies.training.module import MLLMModule
from assemblies.training.rl_data import PromptBatch
from assemblies.training.rollouts import pad_completions, policy_logprobs, rlpr_rewards, sample_rollouts, seed_for
from blocks.answers import MODES
from blocks.batch import select_rows
from blocks.generation import Completion, GenerationConfig
from blocks.rl import (ModeScheduler, RewardCombiner, Rollout, StdFilter, build_components, clipped_policy_loss,
                       group_advantages, masked_mean)

log = logging.getLogger(__name__)


@dataclass
class GrpoObjective:
    """The settings of a GRPO stage (``objective:`` of ``conf/stage/rl_hybrid.yaml``); prompts per step are
    the stage's ``batch_size``, the learning rates its ``lr``.

    Args:
        samples_per_prompt: G, rollouts per prompt (one group).
        max_new_tokens: per mode, ``{short: n, long: n}``.
        thinking_budget: reasoning tokens after which ``</think>`` is forced in long mode (None: off);
            the forced token is left out of the loss.
        temperature, top_p, top_k: rollout sampling (defaults: the policy's own distribution at T=1).
        mode_schedule: ``hybrid`` / ``long_only`` / ``short_only``; ``long_fraction``: P(long) in hybrid.
        advantage: ``grpo`` / ``dr_grpo`` / ``rloo``.
        clip_low, clip_high, aggregation: of the clipped policy loss.
        updates_per_batch: optimizer steps on each rollout batch.
        mask_truncated: leave completions cut at ``max_new_tokens`` out of the loss.
        rewards: the combiner spec (``blocks.rl.reward_combiner``); ``rlpr: {given: true}`` is computed here.
        std_filter: RLPR's std filter options (``blocks.rl.StdFilter``), or None.
        chunk_prompts: prompts per engine call and per training micro-batch (None: the whole batch).
    """

    samples_per_prompt: int = 8
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"short": 512, "long": 8192})
    thinking_budget: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    mode_schedule: str = "hybrid"
    long_fraction: float = 0.5
    advantage: str = "grpo"
    clip_low: float = 0.2
    clip_high: float = 0.28
    aggregation: str = "token-mean"
    updates_per_batch: int = 1
    mask_truncated: bool = True
    rewards: dict[str, Any] = field(default_factory=lambda: {"accuracy": {}, "rlpr": {"given": True}, "format": {},
                                                              "repetition": {"n": 10, "limit": 10}})
    std_filter: dict[str, Any] | None = None
    chunk_prompts: int | None = None

    def __post_init__(self) -> None:
        missing = [m for m in MODES if m not in self.max_new_tokens]
        if missing or self.samples_per_prompt < 2 or self.updates_per_batch < 1:
            raise ValueError(f"GRPO: need max_new_tokens for {list(MODES)} (missing {missing}), "
                             f"samples_per_prompt >= 2 and updates_per_batch >= 1")

    def scheduler(self, seed: int) -> ModeScheduler:
        return ModeScheduler(self.mode_schedule, self.long_fraction, seed=seed)


class GrpoModule(MLLMModule):
    """GRPO over the assembly; held-out evaluation, optimisers, schedules and RNG resume are ``MLLMModule``'s.

    Extra args:
        objective: the stage's ``GrpoObjective``.
        tokenizer: decodes completions; ``generation_ids``: stop / banned / think ids for the engine.
        seed: rollout seed (with the step: ``rollouts.seed_for``).
        gradient_clip: max gradient norm per update (None: off).
    """

    not_hyperparameters = ("objective", "tokenizer")

    def __init__(self, *args, objective: GrpoObjective, tokenizer, generation_ids: Mapping[str, Any], seed: int = 0,
                 gradient_clip: float | None = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.objective, self.tokenizer, self.seed = objective, tokenizer, seed
        self.generation_ids, self.gradient_clip = dict(generation_ids), gradient_clip
        self.combiner = RewardCombiner(build_components(objective.rewards))
        self.std_filter = StdFilter(**objective.std_filter) if objective.std_filter is not None else None
        self.generated = dict.fromkeys(MODES, 0)  # rollout tokens generated in the stage, per mode

    def transfer_batch_to_device(self, batch: PromptBatch, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    # -- one step ---------------------------------------------------------------------------------
    def training_step(self, prompts: PromptBatch, batch_idx: int) -> None:
        self.skips.update(prompts.batch)
        if prompts.batch_size == 0:
            return None
        step = self.global_step // self.objective.updates_per_batch
        started = time.perf_counter()
        completions = self.rollouts(prompts, step)
        rollout_seconds = time.perf_counter() - started
        group = self.objective.samples_per_prompt
        modes = [m for m in prompts.modes for _ in range(group)]
        rollouts = [Rollout(c.text, mode, p.reference, p.meta, "stop" if c.finish_reason == "budget" else c.finish_reason)
                    for c, mode, p in zip(completions, modes, [p for p in prompts.prompts for _ in range(group)])]
        given = {c.name: rlpr_rewards(self.model, prompts.batch, rollouts, group, self.tokenizer)
                 for c in self.combiner.components if c.fn is None and c.name == "rlpr"}
        rewards = self.combiner(rollouts, group, given)
        advantages = group_advantages(rewards.total, group, self.objective.advantage, valid=rewards.valid)
        keep = advantages.keep.clone()
        truncated = torch.tensor([c.finish_reason == "length" for c in completions])
        if self.objective.mask_truncated:
            keep &= ~truncated
        if self.std_filter is not None:
            keep &= self.std_filter(rewards.total.view(-1, group), rewards.valid.view(-1, group)).repeat_interleave(group)
        started = time.perf_counter()
        stats = self.update(prompts, completions, advantages.values, keep)
        lengths = torch.tensor([c.generated_tokens for c in completions], dtype=torch.float)
        for mode, length in zip(modes, lengths.tolist()):
            self.generated[mode] += int(length)
        logged = {**rewards.summary(modes), **stats,
                  "rollout/zero_variance_fraction": advantages.zero_variance_fraction,
                  "rollout/truncated_ratio": float(truncated.float().mean()),
                  "rollout/generated_tokens": float(lengths.sum()),
                  "rollout/generated_tokens_total": float(sum(self.generated.values())),
                  "rollout/used_samples": float(keep.sum()),
                  "time/rollout_s": rollout_seconds, "time/update_s": time.perf_counter() - started}
        for mode in MODES:
            rows = [i for i, m in enumerate(modes) if m == mode]
            if rows:
                logged[f"rollout/length/{mode}"] = float(lengths[rows].mean())
                logged[f"rollout/prompts/{mode}"] = len(rows) / group
                accuracy = [rewards.values["accuracy"][i] for i in rows if rewards.values.get("accuracy")
                            and rewards.values["accuracy"][i] is not None]
                if accuracy:
                    logged[f"rollout/acc/{mode}"] = sum(accuracy) / len(accuracy)
        self.log_dict(logged, batch_size=prompts.batch_size)
        self.log("train/reward", float(rewards.total[rewards.valid].mean()) if rewards.valid.any() else 0.0,
                 prog_bar=True, batch_size=prompts.batch_size)
        return None

    def rollouts(self, prompts: PromptBatch, step: int) -> list[Completion]:
        """G samples per prompt, each prompt in its mode, seeded by (seed, step, rank)."""
        o = self.objective
        config = GenerationConfig(**self.generation_ids, do_sample=True, temperature=o.temperature, top_p=o.top_p,
                                  top_k=o.top_k, num_samples=o.samples_per_prompt,
                                  seed=seed_for(self.seed, step, self.global_rank),
                                  max_new_tokens=tuple(o.max_new_tokens[m] for m in prompts.modes),
                                  thinking_budget=o.thinking_budget)
        return sample_rollouts(self.model, prompts.batch, config, self.tokenizer, o.chunk_prompts)

    def update(self, prompts: PromptBatch, completions: list[Completion], advantages: Tensor,
               keep: Tensor) -> dict[str, float]:
        """``updates_per_batch`` optimizer steps of the clipped loss on one rollout batch; returns the loss,
        clip fractions, ratio and approximate KL averaged over the updates (on the first update the
        ratio is 1: nothing clips) and the sampling policy's entropy."""
        o, group = self.objective, self.objective.samples_per_prompt
        ids, mask = pad_completions([c.token_ids for c in completions], self.tokenizer.pad_token_id)
        for row, completion in enumerate(completions):
            if completion.budget_cut_at is not None:  # forced by the engine, not sampled
                mask[row, completion.budget_cut_at] = False
        device = self.device
        advantages, keep = advantages.to(device), keep.to(device)
        active = (mask.to(device) & keep[:, None]).sum()
        denominator = float(active.clamp(min=1)) if o.aggregation == "token-mean" else float(keep.sum().clamp(min=1))
        chunk = o.chunk_prompts or prompts.batch_size
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        old: list[Tensor] = []
        totals: dict[str, float] = {}
        for update in range(o.updates_per_batch):
            for index, start in enumerate(range(0, prompts.batch_size, chunk)):
                prompt_rows = list(range(start, min(start + chunk, prompts.batch_size)))
                rows = slice(start * group, (start + len(prompt_rows)) * group)
                rows_mask = mask[rows].to(device)
                scores = policy_logprobs(self.model, select_rows(prompts.batch, prompt_rows), group, ids[rows],
                                         mask[rows], with_entropy=update == 0)
                if update == 0:  # the sampling policy: the weights have not moved yet
                    old.append(scores.logprobs.detach())
                    entropy = masked_mean(scores.entropy, rows_mask)
                    _add(totals, "policy/entropy", float(entropy) * len(prompt_rows) / prompts.batch_size)
                out = clipped_policy_loss(scores.logprobs, old[index], advantages[rows], rows_mask,
                                          clip_low=o.clip_low, clip_high=o.clip_high, aggregation=o.aggregation,
                                          sample_mask=keep[rows], max_length=max(o.max_new_tokens.values()),
                                          denominator=denominator)
                if bool(keep[rows].any()) or self.trainer.world_size > 1:  # every rank backpropagates under DDP
                    self.manual_backward(out.loss)
                # Means over the updates; a statistic of active tokens weighs by this chunk's share of them.
                share = float((rows_mask & keep[rows, None]).sum()) / max(float(active), 1.0) / o.updates_per_batch
                _add(totals, "policy/loss", float(out.loss.detach()) / o.updates_per_batch)
                for key in ("clip_fraction_low", "clip_fraction_high", "ratio_mean", "approx_kl"):
                    _add(totals, f"policy/{key}", float(out.stats[key]) * share)
            if self.gradient_clip:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        return totals

    @property
    def stage_metrics(self) -> dict:
        """What the stage report adds: rollout tokens generated in the stage, in all and per mode."""
        return {"rollout_generated_tokens": sum(self.generated.values()),
                **{f"rollout_generated_tokens_{mode}": n for mode, n in self.generated.items()}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rl_state"] = {"generated": dict(self.generated),
                                  "std_filter": self.std_filter.state_dict() if self.std_filter else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("rl_state") or {}
        self.generated.update(state.get("generated", {}))
        if self.std_filter is not None and state.get("std_filter"):
            self.std_filter.load_state_dict(state["std_filter"])



def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value
