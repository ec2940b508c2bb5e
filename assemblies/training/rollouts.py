"""Rollouts and the policy forward over them, shared by the GRPO and DPO stages.

``sample_rollouts`` generates ``G`` samples per prompt through the model's KV-cached engine (visual
tokens and prompt prefill once per prompt). ``policy_logprobs`` scores completions the same way
for training: each prompt is embedded once (vision tower and resampler run once per prompt, with
gradients when they train), its embeddings repeated for its ``G`` completions, and one LLM
forward over prompt + completion gives the completion tokens' log-probs (logits kept only there).

Layout: prompt-major, sample ``s`` of prompt ``p`` is row ``p * G + s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from blocks.batch import MultimodalBatch, position_ids_from_mask, select_rows
from blocks.generation import Completion, GenerationConfig
from blocks.generation.engine import cache_keyword
from blocks.rl import (Rollout, mean_token_probability, probability_reward, rlpr_applies, rlpr_contexts, token_entropy,
                      token_logprobs)
from blocks.rl.rlpr import RlprContexts


def seed_for(seed: int, step: int, rank: int = 0) -> int:
    """The generation seed of a step: rows draw from ``seed_for(...) + row``, so a step's samples depend only
    on (seed, step, rank) and the weights -- a resumed stage samples what the uninterrupted one did."""
    return (seed * 1_000_003 + step * 4_099 + rank * 7_919) % 2**62


@torch.no_grad()
def sample_rollouts(model: nn.Module, batch: MultimodalBatch, config: GenerationConfig, tokenizer=None,
                    chunk_prompts: int | None = None) -> list[Completion]:
    """``config.num_samples`` completions per prompt row of ``batch`` (left padded), prompt-major, with the
    model in eval mode (no dropout) while sampling. ``chunk_prompts``: prompts per engine call
    (None: all); sample rows keep the seeds of the one-call layout."""
    was_training = model.training
    model.eval()
    try:
        if not chunk_prompts or chunk_prompts >= batch.batch_size:
            return model.generate(batch, config, tokenizer=tokenizer)
        out = []
        for start in range(0, batch.batch_size, chunk_prompts):
            rows = list(range(start, min(start + chunk_prompts, batch.batch_size)))
            seed = None if config.seed is None else config.seed + start * config.num_samples
            limits = _rows(config.max_new_tokens, rows)
            budgets = _rows(config.thinking_budget, rows)
            part = model.generate(select_rows(batch, rows), config, tokenizer=tokenizer, seed=seed,
                                  max_new_tokens=limits, thinking_budget=budgets)
            for completion in part:
                completion.prompt_index += start
            out += part
        return out
    finally:
        model.train(was_training)


def _rows(value, rows: list[int]):
    return tuple(value[r] for r in rows) if isinstance(value, tuple) else value


def pad_completions(token_lists: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded completion ids [B, T_c] and their mask [B, T_c] (T_c >= 1)."""
    width = max([len(t) for t in token_lists] + [1])
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.bool)
    for row, tokens in enumerate(token_lists):
        ids[row, :len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
        mask[row, :len(tokens)] = True
    return ids, mask


@dataclass
class PolicyScores:
    """``logprobs`` [B, T_c] fp32 of the completion tokens (0 on padding; differentiable when the forward
    had gradients) and, on request, detached ``entropy`` [B, T_c] of each next-token distribution."""

    logprobs: Tensor
    entropy: Tensor | None = None


def activation_checkpointed(llm: nn.Module) -> bool:
    """Whether the LLM recomputes its forward in the backward (transformers' own switch, or the checkpoint
    wrappers FSDP's ``activation_checkpointing`` puts around its layers): a KV cache filled during the
    forward would be filled twice, so the shared-prefill path is off then."""
    return bool(getattr(llm, "is_activation_checkpointing", False)) or any(
        type(m).__name__ == "CheckpointWrapper" for m in llm.modules())


def policy_logprobs(model: nn.Module, batch: MultimodalBatch, group_size: int, completion_ids: Tensor,
                    completion_mask: Tensor, with_entropy: bool = False) -> PolicyScores:
    """Log-probs of completions [B = P * group_size, T_c] after the P left-padded prompts of ``batch``.

    Each prompt is embedded once (vision tower and resampler once per prompt). Its LLM prefill runs
    once too: the prompt's KV cache, which carries gradients, is repeated for its ``group_size``
    completions and only their tokens go through the LLM again (with activation checkpointing on,
    which drops caches, the prompt is repeated and the whole sequence forwarded instead). Logits are
    kept only on the positions that predict completion tokens.
    """
    prompts = model.embed(batch)                                            # [P, T_p, D]
    if completion_ids.shape[0] != prompts.shape[0] * group_size:
        raise ValueError(f"{completion_ids.shape[0]} completions for {prompts.shape[0]} prompts x {group_size}")
    completion_ids = completion_ids.to(prompts.device)
    completion_mask = completion_mask.to(prompts.device)
    completions = model.llm.get_input_embeddings()(completion_ids).to(prompts.dtype)
    prompt_mask = batch.attention_mask.long()
    mask = torch.cat([prompt_mask.repeat_interleave(group_size, 0), completion_mask.long()], 1)
    if activation_checkpointed(model.llm):
        embeds = torch.cat([prompts.repeat_interleave(group_size, 0), completions], 1)
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                           use_cache=False, logits_to_keep=completion_ids.shape[1] + 1).logits[:, :-1]
    else:
        cache = DynamicCache()
        first = model.llm(inputs_embeds=prompts, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                          use_cache=True, logits_to_keep=1, **{cache_keyword(model.llm): cache}).logits
        cache.batch_repeat_interleave(group_size)
        positions = prompt_mask.sum(1, keepdim=True).repeat_interleave(group_size, 0) + \
            torch.arange(completion_ids.shape[1], device=prompts.device)
        logits = first.repeat_interleave(group_size, 0)                      # predicts completion token 0
        if completion_ids.shape[1] > 1:                                      # token i predicts token i + 1
            rest = model.llm(inputs_embeds=completions[:, :-1], attention_mask=mask[:, :-1],
                             position_ids=positions[:, :-1], use_cache=True, **{cache_keyword(model.llm): cache}).logits
            logits = torch.cat([logits, rest], 1)
    logprobs = token_logprobs(logits, completion_ids, completion_mask)
    entropy = token_entropy(logits) if with_entropy else None
    return PolicyScores(logprobs, entropy)


@torch.no_grad()
def rlpr_rewards(model: nn.Module, batch: MultimodalBatch, rollouts: Sequence[Rollout], group_size: int,
                 tokenizer) -> list[float | None]:
    """RLPR's probability reward of each rollout (``blocks.rl.rlpr``): ``None`` where it does not apply,
    0.0 for a long rollout with unclosed reasoning, else max(score_B - score_A, 0), both scores from
    the current policy (prompt + own reasoning + reference; prompt + empty think block + reference)."""
    values: list[float | None] = [None if not rlpr_applies(r) else 0.0 for r in rollouts]
    contexts = [rlpr_contexts(r.text) if v is not None else None for r, v in zip(rollouts, values)]
    if all(c is None for c in contexts):
        return values

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def scores(rows: list[tuple[str, str] | None], group: int) -> Tensor:
        """Mean reference-token probability of each (context, reference) row after its prompt."""
        tokens, refs = [], []
        for row in rows:
            prefix, reference = (encode(row[0]), encode(row[1])) if row else ([tokenizer.pad_token_id], [])
            tokens.append(prefix + reference)
            refs.append((len(prefix), len(prefix) + len(reference)))
        ids, mask = pad_completions(tokens, tokenizer.pad_token_id)
        logprobs = policy_logprobs(model, batch, group, ids, mask).logprobs
        ref_mask = torch.zeros_like(mask)
        for row, (start, end) in enumerate(refs):
            ref_mask[row, start:end] = True
        return mean_token_probability(logprobs, ref_mask.to(logprobs.device)).cpu()

    was_training = model.training
    model.eval()
    try:
        with_reasoning = scores([(c.with_reasoning, r.reference) if c else None for c, r in zip(contexts, rollouts)],
                                group_size)
        firsts = [rollouts[p * group_size] for p in range(len(rollouts) // group_size)]
        without = scores([(RlprContexts("").without_reasoning, r.reference) if rlpr_applies(r) else None
                          for r in firsts], 1)
    finally:
        model.train(was_training)
    reward = probability_reward(with_reasoning, without.repeat_interleave(group_size))
    return [None if v is None else (float(reward[i]) if contexts[i] is not None else 0.0)
            for i, v in enumerate(values)]
