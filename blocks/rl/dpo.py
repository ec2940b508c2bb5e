"""Sigmoid DPO (Rafailov et al. 2023) as RLAIF-V trains it: reference log-probs as inputs.

    loss = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])
           + sft_weight * (-log pi(y_w) / |y_w|)

The reference model's log-probs are computed once, before training, by the caller (RLAIF-V's
``logps_calculator``), so no second model is held in memory. Log-probs are sums over the response
tokens (``blocks.rl.logprobs.sequence_logprobs``); ``length_normalise`` divides each by its token
count first (RLAIF-V's length-averaged option), for the policy and the reference alike.
MiniCPM-V 4.5: beta 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class DpoLoss:
    """``loss`` (scalar) and detached ``stats``: ``chosen_reward`` / ``rejected_reward`` (means of
    beta x log-ratio to the reference), ``margin`` (their difference), ``accuracy`` (fraction of pairs
    whose chosen reward is higher), ``sft`` (the chosen response's mean NLL per token, when computed)."""

    loss: Tensor
    stats: dict[str, Tensor]


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor,
             *, beta: float = 0.1, chosen_tokens: Tensor | None = None, rejected_tokens: Tensor | None = None,
             length_normalise: bool = False, sft_weight: float = 0.0) -> DpoLoss:
    """Summed response log-probs [B] of the policy and the reference -> ``DpoLoss`` (mean over pairs).

    ``chosen_tokens`` / ``rejected_tokens`` [B]: response lengths, needed by ``length_normalise``
    (both) and by the SFT term (chosen).
    """
    if beta <= 0:
        raise ValueError(f"DPO beta must be > 0, got {beta}")
    if length_normalise and (chosen_tokens is None or rejected_tokens is None):
        raise ValueError("length_normalise needs chosen_tokens and rejected_tokens")
    if sft_weight and chosen_tokens is None:
        raise ValueError("the SFT term needs chosen_tokens")
    pc, pr, rc, rr = (x.float() for x in (policy_chosen, policy_rejected, reference_chosen, reference_rejected))
    if length_normalise:
        nc, nr = chosen_tokens.clamp(min=1).float(), rejected_tokens.clamp(min=1).float()
        pc, rc, pr, rr = pc / nc, rc / nc, pr / nr, rr / nr
    chosen_reward, rejected_reward = beta * (pc - rc), beta * (pr - rr)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    stats = {"chosen_reward": chosen_reward.detach().mean(), "rejected_reward": rejected_reward.detach().mean(),
             "margin": (chosen_reward - rejected_reward).detach().mean(),
             "accuracy": (chosen_reward > rejected_reward).float().mean()}
    if sft_weight:
        sft = (-policy_chosen.float() / chosen_tokens.clamp(min=1).float()).mean()
        loss = loss + sft_weight * sft
        stats["sft"] = sft.detach()
    return DpoLoss(loss, stats)
