"""PPO-style clipped policy-gradient loss for GRPO, without KL or entropy terms (the paper's RL).

Per completion token t of sample i, with r = exp(log pi(t) - log pi_old(t)) and advantage A_i:

    loss_t = -min(r * A_i, clip(r, 1 - clip_low, 1 + clip_high) * A_i)

Separate low/high clips are DAPO's clip-higher (0.2 / 0.28; RLPR uses 0.2 / 0.27). ``old_logprobs``
are the log-probs of the policy that sampled the rollout, computed once before the first update
(detached): on that update r = 1 and the gradient is the plain policy gradient; later updates on the
same batch (the caller's loop) are clipped against it. With no KL term there is no reference model.

Aggregations (verl's names):
- ``token-mean`` (default; DAPO, TRL's ``dapo``): sum over all active tokens / number of active
  tokens, so every token weighs the same whatever the length of its sequence.
- ``seq-mean-token-mean`` (the original GRPO): mean over tokens per sequence, then over sequences;
  tokens of short sequences weigh more (length bias).
- ``seq-mean-token-sum-norm`` (Dr. GRPO): sum over tokens / (sequences x ``max_length``), a constant
  normaliser, so no length bias.
When a batch is split into micro-batches, pass ``denominator`` (active tokens, or sequences, of the
whole batch) so the accumulated gradient equals the one of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGGREGATIONS: tuple[Aggregation, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
MAX_LOG_RATIO = 20.0  # exp(20) ~ 5e8: keeps one wild token from overflowing the ratio to inf


@dataclass(frozen=True)
class PolicyLoss:
    """``loss`` (scalar, differentiable) and detached scalar ``stats``: ``clip_fraction_low`` /
    ``clip_fraction_high`` (active tokens whose clipped branch is taken below / above), ``ratio_mean``,
    ``approx_kl`` (k3 estimate of KL(old || new)), ``active_tokens``."""

    loss: Tensor
    stats: dict[str, Tensor]


def clipped_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                        clip_low: float = 0.2, clip_high: float = 0.28, aggregation: Aggregation = "token-mean",
                        sample_mask: Tensor | None = None, max_length: int | None = None,
                        denominator: float | None = None) -> PolicyLoss:
    """logprobs, old_logprobs [B, T] (completion tokens), advantages [B], mask [B, T] -> ``PolicyLoss``.

    ``sample_mask`` [B] bool drops whole samples (zero-variance groups, failed rewards, truncated
    completions when masked). ``max_length``: the normaliser of ``seq-mean-token-sum-norm``
    (default T; use the generation limit). ``denominator``: see the module docstring.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if not (logprobs.shape == old_logprobs.shape == mask.shape) or advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"shapes: logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)}, "
                         f"mask {tuple(mask.shape)} must be [B, T] and advantages {tuple(advantages.shape)} [B]")
    active = mask.bool()
    if sample_mask is not None:
        active = active & sample_mask.bool()[:, None]
    log_ratio = torch.where(active, logprobs - old_logprobs.detach(), 0.0).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    adv = advantages.detach().float()[:, None]
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    per_token = torch.where(active, per_token, 0.0)

    tokens_per_seq = active.sum(1)
    sequences = (tokens_per_seq > 0).sum()
    if aggregation == "token-mean":
        loss = per_token.sum() / (denominator if denominator is not None else active.sum().clamp(min=1))
    elif aggregation == "seq-mean-token-mean":
        per_seq = per_token.sum(1) / tokens_per_seq.clamp(min=1)
        loss = per_seq.sum() / (denominator if denominator is not None else sequences.clamp(min=1))
    else:
        seqs = denominator if denominator is not None else sequences.clamp(min=1)
        loss = per_token.sum() / (seqs * (max_length if max_length is not None else logprobs.shape[1]))

    with torch.no_grad():
        n = active.sum().clamp(min=1)
        low = (ratio < 1 - clip_low) & (adv < 0) & active
        high = (ratio > 1 + clip_high) & (adv > 0) & active
        stats = {
            "clip_fraction_low": low.sum() / n,
            "clip_fraction_high": high.sum() / n,
            "ratio_mean": torch.where(active, ratio, 0.0).sum() / n,
            "approx_kl": torch.where(active, ratio - 1 - log_ratio, 0.0).sum() / n,
            "active_tokens": active.sum().float(),
        }
    return PolicyLoss(loss, stats)
