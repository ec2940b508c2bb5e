"""Reinforcement-learning blocks: pure functions and small classes, no Lightning, no Hydra.

GRPO over short and long modes (``modes``, ``rewards``, ``reward_combiner``, ``rlpr``,
``advantages``, ``logprobs``, ``policy_loss``) and RLAIF-V preference learning (``claims``,
``scene_claims``, ``dpo``). See ``docs/rl.md``.
"""

from blocks.rl.advantages import GroupAdvantages, group_advantages, standardise_in_groups
from blocks.rl.claims import (ClaimReport, PreferencePair, ResponseChecker, YesNoChecker, build_pairs,
                              contradiction_rate, parse_yes_no)
from blocks.rl.dpo import DpoLoss, dpo_loss
from blocks.rl.logprobs import completion_logits, masked_mean, sequence_logprobs, token_entropy, token_logprobs
from blocks.rl.modes import ModeScheduler
from blocks.rl.policy_loss import PolicyLoss, clipped_policy_loss
from blocks.rl.reward_combiner import RewardBatch, RewardCombiner, RewardComponent, build_components
from blocks.rl.rewards import REWARDS, Rollout, build_reward, register_reward, reward_model_text, verifier_of
from blocks.rl.rlpr import StdFilter, mean_token_probability, probability_reward, rlpr_applies, rlpr_contexts
from blocks.rl.scene_claims import SceneChecker, scene_checker, split_scene_claims

__all__ = [
    "ClaimReport", "DpoLoss", "GroupAdvantages", "ModeScheduler", "PolicyLoss", "PreferencePair", "REWARDS",
    "ResponseChecker", "RewardBatch", "RewardCombiner", "RewardComponent", "Rollout", "SceneChecker", "StdFilter",
    "YesNoChecker", "build_components", "build_pairs", "build_reward", "clipped_policy_loss", "completion_logits",
    "contradiction_rate", "dpo_loss", "group_advantages", "masked_mean", "mean_token_probability", "parse_yes_no",
    "probability_reward", "register_reward", "reward_model_text", "rlpr_applies", "rlpr_contexts", "scene_checker",
    "sequence_logprobs", "split_scene_claims", "standardise_in_groups", "token_entropy", "token_logprobs",
    "verifier_of",
]
