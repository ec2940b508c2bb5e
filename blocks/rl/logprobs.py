"""Per-token log-probabilities and entropies of completion tokens, from a causal LM's logits.

log p(token) = logit[token] - logsumexp(logits), computed in fp32 over chunks of rows: only the
gathered [B, T] values and one chunk's temporaries exist at a time, never a [B, T, V] log-softmax.
With fp32 logits nothing of size V is copied (autograd keeps the logits it already holds); with
bf16 logits each chunk's fp32 copy is kept for the backward, one fp32 copy of the logits in all.
"""

from __future__ import annotations

import torch
from torch import Tensor


def completion_logits(logits: Tensor, input_ids: Tensor, prompt_length: int) -> tuple[Tensor, Tensor]:
    """logits [B, L, V], input_ids [B, L] of left-padded prompts of ``prompt_length`` tokens followed
    by completions -> (logits [B, L - P, V], targets [B, L - P]), views aligned so ``logits[:, t]``
    predicts ``targets[:, t]`` (the model's output at position i predicts token i + 1)."""
    if not 0 < prompt_length < input_ids.shape[1]:
        raise ValueError(f"prompt_length must be in (0, {input_ids.shape[1]}), got {prompt_length}")
    return logits[:, prompt_length - 1:-1], input_ids[:, prompt_length:]


def token_logprobs(logits: Tensor, targets: Tensor, mask: Tensor | None = None, chunk_rows: int = 8) -> Tensor:
    """logits [B, T, V], targets [B, T] (aligned) -> log p(targets) [B, T] in fp32; 0 where ``mask``
    [B, T] is 0 (there ``targets`` may hold anything, e.g. padding ids or -100)."""
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} are not aligned")
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    safe = torch.where(keep, targets, 0)
    rows = []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start:start + chunk_rows].float()
        picked = chunk.gather(-1, safe[start:start + chunk_rows, :, None]).squeeze(-1)
        rows.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.where(keep, torch.cat(rows), 0.0)


@torch.no_grad()
def token_entropy(logits: Tensor, chunk_rows: int = 8) -> Tensor:
    """logits [B, T, V] -> entropy of each next-token distribution [B, T] (fp32, no grad; for logging)."""
    rows = []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start:start + chunk_rows].float()
        logp = chunk - torch.logsumexp(chunk, dim=-1, keepdim=True)
        # Masked-out vocabulary entries (logit -inf) have p = 0 and add nothing, not 0 * -inf = NaN.
        rows.append(-torch.where(logp > -torch.inf, logp.exp() * logp, 0.0).sum(-1))
    return torch.cat(rows)


def sequence_logprobs(logprobs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """logprobs, mask [B, T] -> (sum of the masked log-probs [B], number of masked tokens [B])."""
    m = mask.bool()
    return torch.where(m, logprobs, 0.0).sum(-1), m.sum(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the entries where ``mask`` is set (0 when none are)."""
    m = mask.bool()
    return torch.where(m, values, 0.0).sum() / m.sum().clamp(min=1)
