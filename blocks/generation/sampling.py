"""Choosing the next token from logits: penalties, temperature, top-k / top-p, and seeded draws.

Every function works on the rows still generating, ``logits`` [A, V] in fp32. ``top_k=0`` and
``top_p=1.0`` mean no truncation: sampling then draws from the model's own distribution (the policy),
with no hidden ``top_k=50`` as transformers' ``generate`` adds when no generation config says otherwise.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def penalize_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL-style repetition penalty (as transformers'): a seen token's logit is divided by ``penalty``
    when positive, multiplied when negative. ``seen`` [A, V] bool."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def truncate(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """``logits`` with everything outside the top ``top_k`` and outside the smallest set of tokens whose
    probability reaches ``top_p`` set to -inf (the most likely token always stays)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
        drop = before >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw(probs: Tensor, generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """One token per row [A] from ``probs`` [A, V]; row i uses ``generators[i]`` when given.

    A generator per row makes a row's draws independent of which other rows share the batch, so a
    prompt's samples are the same whether its prefill is shared or computed once per sample.
    """
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(1)
    return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators)])
