"""RL rollout speed, side by side in one process on the same prompts.

1. Generated tokens/s for G samples per prompt: the visual tokens and prompt prefill computed once per
   prompt (the engine's shared prefill, what the GRPO stage uses), once per sample (each prompt
   repeated G times), and without a KV cache (the whole sequence forwarded for every token). Every row
   generates exactly ``new_tokens`` tokens (no early stop), so all variants do the same work; the
   per-row seeds make the shared and per-sample variants draw the same tokens (checked).
2. The sampling cost of a hybrid step (half the prompts long) against a long-only step: generated
   tokens and seconds per step on the same prompts, with the GRPO stage's per-mode limits. Needs a
   checkpoint with a working long mode (``weights`` + its ``tokenizer``) to mean anything.
"""

from __future__ import annotations

import time

import torch

from assemblies.presets import build_model, compose_config
from assemblies.training.config import instantiate
from assemblies.training.rl_data import ModedBatchSampler, PromptCollate, PromptDataset
from assemblies.training.rollouts import sample_rollouts, seed_for
from assemblies.training.sampling import MixtureBatchSampler
from assemblies.training.weights import load_weights
from blocks.batch import collate, position_ids_from_mask
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.tokenizer import load_tokenizer, tiny_tokenizer
from blocks.generation import GenerationConfig
from blocks.generation.sampling import draw
from blocks.generation.tokens import generation_token_ids
from blocks.rl import ModeScheduler

CORPORA = ("documents", "scenes", "videos", "digits")


@torch.no_grad()
def uncached_samples(model, batch, config: GenerationConfig) -> list[list[int]]:
    """``config.num_samples`` sampled rows per prompt, every token from a forward of the whole sequence
    (no KV cache), with the engine's per-row seeds; exactly ``max_new_tokens`` each."""
    embeds = model.embed(batch).repeat_interleave(config.num_samples, 0)
    mask = batch.attention_mask.long().repeat_interleave(config.num_samples, 0)
    generators = [torch.Generator().manual_seed(config.seed + row) for row in range(embeds.shape[0])]
    banned = list(config.banned_token_ids)
    tokens = []
    for _ in range(config.max_new_tokens):
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                           use_cache=False, logits_to_keep=1).logits[:, -1].float()
        logits[:, banned] = float("-inf")
        logits[:, list(config.stop_token_ids)] = float("-inf")  # as min_new_tokens does in the engine
        token = draw((logits / config.temperature).softmax(-1), generators)
        tokens.append(token)
        embeds = torch.cat([embeds, model.llm.get_input_embeddings()(token)[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
    return torch.stack(tokens, 1).tolist()


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def _best(variants: dict, repeats: int) -> tuple[dict, dict]:
    """(output, best seconds) per variant: one untimed warm-up each, then ``repeats`` timed rounds with the
    variants interleaved, so a busy machine slows them alike; the fastest round is the least disturbed."""
    outputs = {name: fn() for name, fn in variants.items()}
    best = {name: float("inf") for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            best[name] = min(best[name], _timed(fn)[1])
    return outputs, best


def run(weights: str | None = None, tokenizer: str | None = None, prompts: int = 16, samples: int = 8,
        new_tokens: int = 32, steps: int = 3, repeats: int = 3, max_new_tokens: dict | None = None,
        seed: int = 0) -> dict:
    """Both tables (see the module docstring); ``weights``/``tokenizer``: a tiny checkpoint (default: random).
    Part 1 keeps the best of ``repeats`` rounds; part 2 averages ``steps`` steps of each schedule."""
    torch.manual_seed(seed)
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny"])
    tok = load_tokenizer(tokenizer) if tokenizer else tiny_tokenizer()
    model = build_model(cfg)
    if weights:
        load_weights(model, weights)
    model.eval()
    ids = generation_token_ids(tok)
    processors = {mode: (lambda record, p=MiniCPMVProcessor(tok, ProcessorConfig(
        max_slice_nums=1, scale_resolution=112, tokens_per_group=model.resampler.tokens_per_group,
        enable_thinking=mode == "long")): p(record, mode="inference")) for mode in ("short", "long")}
    corpora = [instantiate(cfg.data.corpora[name])(split="heldout", size=64, seed=seed) for name in CORPORA]
    dataset = PromptDataset(corpora, list(CORPORA), processors)
    inner = MixtureBatchSampler([len(c) for c in corpora], [1.0] * len(corpora), prompts, steps, seed=seed)

    # 1. throughput
    batch = PromptCollate(tok.pad_token_id)([dataset[(i, "short")] for i in inner.batch(0)]).batch
    config = GenerationConfig(**ids, do_sample=True, num_samples=samples, seed=seed, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens)
    repeated = collate([dataset[(i, "short")].sample for i in inner.batch(0) for _ in range(samples)],
                       tok.pad_token_id, padding_side="left")
    names = ("shared prefill (visual once per prompt), KV cache", "visual + prefill once per sample, KV cache",
             "shared visual, no KV cache")
    outputs, seconds = _best({names[0]: lambda: model.generate(batch, config),
                              names[1]: lambda: model.generate(repeated, config, num_samples=1),
                              names[2]: lambda: uncached_samples(model, batch, config)}, repeats)
    generated = prompts * samples * new_tokens
    same = [a.token_ids == b.token_ids for a, b in zip(outputs[names[0]], outputs[names[1]])]
    agree = [a.token_ids == b for a, b in zip(outputs[names[0]], outputs[names[2]])]
    throughput = {name: generated / seconds[name] for name in names}
    print(f"{prompts} prompts x {samples} samples x {new_tokens} tokens (threads {torch.get_num_threads()})")
    print(f"{'variant':<52}{'tokens/s':>10}{'x':>7}")
    for name, rate in throughput.items():
        print(f"{name:<52}{rate:>10.0f}{rate / throughput[names[1]]:>7.2f}")
    print(f"same tokens: shared vs per sample {sum(same)}/{len(same)} rows, cached vs uncached {sum(agree)}/{len(agree)}")

    # 2. hybrid vs long-only sampling per step
    limits = max_new_tokens or {"short": 16, "long": 192}
    model.generate(batch, config)  # warm-up
    cost = {name: {"generated_tokens": 0, "seconds": 0.0, "long_prompts": 0} for name in ("hybrid", "long_only")}
    for step in range(steps):
        for name in cost:
            moded = ModedBatchSampler(inner, ModeScheduler(name, seed=seed)).batch(step)
            step_batch = PromptCollate(tok.pad_token_id)([dataset[item] for item in moded])
            step_config = GenerationConfig(**ids, do_sample=True, num_samples=samples, seed=seed_for(seed, step),
                                           max_new_tokens=tuple(limits[m] for m in step_batch.modes))
            out, seconds = _timed(lambda: sample_rollouts(model, step_batch.batch, step_config, tok))
            cost[name]["generated_tokens"] += sum(c.generated_tokens for c in out) / steps
            cost[name]["seconds"] += seconds / steps
            cost[name]["long_prompts"] += step_batch.modes.count("long") / steps
    ratio = {k: cost["hybrid"][k] / max(cost["long_only"][k], 1e-9) for k in ("generated_tokens", "seconds")}
    print(f"\nper step ({prompts} prompts x {samples} samples, limits {limits}, mean of {steps} steps)")
    print(f"{'schedule':<12}{'long prompts':>14}{'gen tokens':>12}{'seconds':>10}")
    for name, row in cost.items():
        print(f"{name:<12}{row['long_prompts']:>14.1f}{row['generated_tokens']:>12.0f}{row['seconds']:>10.2f}")
    print(f"hybrid / long-only: tokens {ratio['generated_tokens']:.2f}, time {ratio['seconds']:.2f}")
    return {"throughput_tokens_per_s": throughput, "shared_equals_per_sample_rows": sum(same),
            "cached_equals_uncached_rows": sum(agree), "rows": len(same), "step_cost": cost,
            "hybrid_over_long_only": ratio, "weights": weights, "threads": torch.get_num_threads()}
