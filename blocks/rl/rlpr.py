"""RLPR's probability reward for free-form answers, and its std-based prompt filter.

RLPR (Yu et al. 2025, OpenBMB) scores a long-mode sample by how likely the policy finds the
*reference* answer once it has thought: the generated answer is replaced by the reference, and

    score_B = mean over reference tokens of p(token | prompt + own reasoning + reference so far)
    score_A = the same with no reasoning (an empty think block)
    reward  = max(score_B - score_A, 0)

The model forwards are the caller's: it tokenises ``long prompt + context + reference`` for each
context of ``rlpr_contexts`` (prefix and reference tokenised apart and concatenated, so the
reference tokens are the same in both), takes the reference tokens' log-probs (``token_logprobs``)
and passes them here. RLPR computes score_A once with the initial policy and stores it; computing
it with the current policy every step is the caller's other option.

Per sample (``rlpr_applies``, then ``rlpr_contexts``): not routed to RLPR (``meta["verifier"]``),
no reference, or short mode -> ``None`` (short mode has no reasoning: score_B would equal score_A
for every sample); a long rollout with no closed reasoning (cut off, malformed) -> 0.0, like the
accuracy reward; else the reward above. These values go to the combiner as the given ``rlpr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from blocks.answers import THINK_CLOSE
from blocks.rl.advantages import group_stats
from blocks.rl.rewards import RLPR, Rollout, verifier_of

ANSWER_GAP = "\n\n"  # what the chat template writes between </think> and the answer


@dataclass(frozen=True)
class RlprContexts:
    """Texts to put between the long-mode generation prompt (ending ``<think>\\n``) and the
    reference: ``with_reasoning`` (the policy's own reasoning, closed) and ``without_reasoning``."""

    with_reasoning: str
    without_reasoning: str = "\n" + THINK_CLOSE + ANSWER_GAP


def rlpr_applies(rollout: Rollout) -> bool:
    """Whether the probability reward scores this sample: routed to RLPR, with a reference, long mode."""
    return verifier_of(rollout) == RLPR and rollout.reference is not None and rollout.mode == "long"


def rlpr_contexts(completion: str) -> RlprContexts | None:
    """The contexts of a long-mode ``completion``; ``None`` when its reasoning is not closed by
    ``</think>`` (the sample earns 0). The reasoning is kept verbatim up to its first ``</think>``."""
    if THINK_CLOSE not in completion:
        return None
    reasoning = completion[:completion.index(THINK_CLOSE) + len(THINK_CLOSE)]
    return RlprContexts(with_reasoning=reasoning + ANSWER_GAP)


def mean_token_probability(logprobs: Tensor, mask: Tensor) -> Tensor:
    """logprobs, mask [B, T] (mask: the reference answer's tokens) -> [B] mean of exp(logprob) in
    fp32 (RLPR's ``mean_exp_log_softmax``); 0 for a row without reference tokens."""
    m = mask.bool()
    probs = torch.where(m, logprobs.float().exp(), 0.0)
    return probs.sum(-1) / m.sum(-1).clamp(min=1)


def probability_reward(score_with_reasoning: Tensor, score_without_reasoning: Tensor) -> Tensor:
    """[B], [B] -> [B] debiased probability reward max(score_B - score_A, 0) (RLPR's ``threshold_0``)."""
    return (score_with_reasoning.float() - score_without_reasoning.float()).clamp(min=0.0)


class StdFilter:
    """RLPR's std filter: drop prompts whose group reward std is below ``beta`` x an EMA of the
    batch's mean group std (prompts that teach little relative to the recent ones).

    Each call is one step. The mean group std of the first ``warmup_steps`` steps initialises the
    EMA, then ``ema = ratio * ema + (1 - ratio) * batch mean``; filtering starts at step
    ``start_step`` (1-based) and uses the EMA of the steps before the current one. RLPR's settings:
    beta 0.5, ratio 0.99, EMA from step 6, filtering from step 11.
    """

    def __init__(self, beta: float = 0.5, ema_ratio: float = 0.99, warmup_steps: int = 5,
                 start_step: int = 11) -> None:
        if not 0.0 <= ema_ratio < 1.0 or warmup_steps < 1 or start_step <= warmup_steps:
            raise ValueError(f"std filter: need 0 <= ema_ratio < 1, warmup_steps >= 1, start_step > "
                             f"warmup_steps; got {ema_ratio}, {warmup_steps}, {start_step}")
        self.beta, self.ema_ratio = beta, ema_ratio
        self.warmup_steps, self.start_step = warmup_steps, start_step
        self.step, self.ema, self._warmup_sum = 0, None, 0.0

    def __call__(self, rewards: Tensor, valid: Tensor | None = None) -> Tensor:
        """rewards [P, G] (valid [P, G] bool) -> keep [P] bool; updates the EMA."""
        ok = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
        std = group_stats(rewards, ok).std
        self.step += 1
        keep = torch.ones_like(std, dtype=torch.bool)
        if self.ema is not None and self.step >= self.start_step:
            keep = std >= self.beta * self.ema
        batch_mean = float(std.mean())
        if self.step <= self.warmup_steps:
            self._warmup_sum += batch_mean
            if self.step == self.warmup_steps:
                self.ema = self._warmup_sum / self.warmup_steps
        else:
            self.ema = self.ema_ratio * self.ema + (1 - self.ema_ratio) * batch_mean
        return keep

    def state_dict(self) -> dict[str, float | int | None]:
        """What a resumed run needs to filter exactly as the uninterrupted one."""
        return {"step": self.step, "ema": self.ema, "warmup_sum": self._warmup_sum}

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        self.step, self.ema, self._warmup_sum = int(state["step"]), state["ema"], float(state["warmup_sum"])
