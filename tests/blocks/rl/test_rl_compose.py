"""The blocks composed as a GRPO module would use them, on a toy policy: the signs and shapes agree."""

import torch

from blocks.rl import (ModeScheduler, RewardCombiner, Rollout, build_components, clipped_policy_loss,
                       group_advantages, token_logprobs)

WORDS = ["a", "b", "c"]


def test_grpo_loop_learns_a_toy_answer():
    torch.manual_seed(0)
    steps, prompts, group, length = 25, 4, 8, 2
    table = torch.zeros(length, len(WORDS), requires_grad=True)   # the toy policy: independent tokens
    combiner = RewardCombiner(build_components({"accuracy": {}, "format": {}}))
    modes = ModeScheduler("short_only")
    means = []
    for step in range(steps):
        batch = prompts * group
        with torch.no_grad():
            tokens = torch.distributions.Categorical(logits=table).sample((batch,))        # [B, T]
        rollouts = [Rollout(" ".join(WORDS[t] for t in row), mode, "b c")
                    for row, mode in zip(tokens.tolist(), modes.per_sample(modes.modes(step, prompts), group))]
        rewards = combiner(rollouts, group)
        means.append(rewards.total.mean().item())
        adv = group_advantages(rewards.total, group, valid=rewards.valid)
        mask = torch.ones_like(tokens)
        old = token_logprobs(table.expand(batch, -1, -1), tokens).detach()                  # the sampling policy
        for update in range(2):                                                           # several updates per batch
            out = clipped_policy_loss(token_logprobs(table.expand(batch, -1, -1), tokens), old, adv.values, mask,
                                      sample_mask=adv.keep)
            if update == 0 and adv.keep.any():
                assert out.stats["ratio_mean"].item() == 1.0
            (grad,) = torch.autograd.grad(out.loss, table)
            with torch.no_grad():
                table -= 2.0 * grad                                                       # plain SGD
    assert [WORDS[i] for i in table.argmax(-1).tolist()] == ["b", "c"]
    assert sum(means[-5:]) / 5 > 0.8 > sum(means[:5]) / 5
