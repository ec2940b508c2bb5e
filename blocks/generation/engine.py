"""The generation engine: a KV-cached decode loop over a transformers causal LM fed ``inputs_embeds``.

One engine serves chat (``assemblies.chat``), generation-based evaluation and RL rollouts:

    completions = generate(llm, inputs_embeds [B, T, D], attention_mask [B, T] (left padded), config)

- The prompts are prefilled once. With ``num_samples=N`` the prefill's KV cache is repeated N times
  (``DynamicCache.batch_repeat_interleave``), so the visual tokens (computed by the caller before the
  embeddings) and the prompt's forward are shared by its N samples.
- Greedy or sampling with explicit ``temperature`` / ``top_p`` / ``top_k`` (defaults: no truncation,
  the model's own distribution), repetition penalty over the generated tokens, several stop ids,
  ``min_new_tokens``, per-prompt ``max_new_tokens``.
- Banned ids (the visual placeholders) get probability 0 and are never emitted, greedy or sampled.
- A per-prompt thinking budget: in a row whose prompt opened ``<think>``, after N reasoning tokens
  without ``</think>`` the next token is forced to ``</think>`` and the answer follows.
- A seeded ``torch.Generator`` per output row (seed + row index): the same seed gives the same
  samples whatever else shares the batch.
- A streamer with transformers' ``BaseStreamer`` interface (``put`` / ``end``), fed as transformers'
  ``generate`` feeds it from ``inputs_embeds``: an empty prompt, then one token per step.
- Rows that finish leave the batch (``batch_select_indices``); the rest decode on.

Each output row gives a ``Completion``: token ids (the stop token included), text, finish reason,
prompt and generated token counts and, on request, per-token log-probs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from blocks.batch import position_ids_from_mask
from blocks.generation.sampling import draw, penalize_repeats, truncate

FINISH_REASONS = ("stop", "length", "budget")
PerPrompt = int | tuple[int, ...]


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. Defaults: greedy, no penalty, no truncation, no stop ids.

    ``max_new_tokens`` and ``thinking_budget`` take one value for every prompt or a tuple with one per
    prompt. ``temperature``, ``top_p`` and ``top_k`` only apply with ``do_sample`` (setting them for
    greedy decoding is an error, not a silent no-op). ``think_open_id`` / ``think_close_id`` are the
    ``<think>`` / ``</think>`` ids (needed for a thinking budget). ``seed``: row r of the output draws
    from ``torch.Generator().manual_seed(seed + r)``; None uses torch's global generator.
    """

    max_new_tokens: PerPrompt = 256
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    banned_token_ids: tuple[int, ...] = ()
    think_open_id: int | None = None
    think_close_id: int | None = None
    thinking_budget: int | None | tuple[int | None, ...] = None
    num_samples: int = 1
    seed: int | None = None
    return_logprobs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "stop_token_ids", "banned_token_ids", "thinking_budget"):
            value = getattr(self, name)
            if isinstance(value, (list, range)):
                object.__setattr__(self, name, tuple(value))
        problems = []
        if not self.do_sample and (self.temperature != 1.0 or self.top_p != 1.0 or self.top_k != 0):
            problems.append("temperature / top_p / top_k apply only when sampling (do_sample=True)")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            problems.append(f"need temperature > 0, 0 < top_p <= 1, top_k >= 0, repetition_penalty > 0; got "
                            f"{self.temperature}, {self.top_p}, {self.top_k}, {self.repetition_penalty}")
        limits = self.max_new_tokens if isinstance(self.max_new_tokens, tuple) else (self.max_new_tokens,)
        if any(n < 1 for n in limits) or self.min_new_tokens < 0 or self.num_samples < 1:
            problems.append("need max_new_tokens >= 1, min_new_tokens >= 0, num_samples >= 1")
        budgets = self.thinking_budget if isinstance(self.thinking_budget, tuple) else (self.thinking_budget,)
        if any(b is not None for b in budgets) and self.think_close_id is None:
            problems.append("a thinking_budget needs think_close_id (the </think> token id)")
        if any(b is not None and b < 0 for b in budgets):
            problems.append(f"thinking_budget must be >= 0, got {self.thinking_budget}")
        if problems:
            raise ValueError("GenerationConfig: " + "; ".join(problems))


@dataclass
class Completion:
    """One generated sample.

    ``token_ids`` include the stop token when there is one; ``text`` is their decoding without special
    tokens (None without a tokenizer). ``finish_reason``: ``stop`` (a stop id), ``length``
    (``max_new_tokens`` reached) or ``budget`` (the thinking budget forced ``</think>``, at index
    ``budget_cut_at`` of ``token_ids``, and the answer then stopped). ``logprobs[t]`` =
    ``log_softmax(logits / T)[token_ids[t]]`` of the model's raw logits (T = the sampling temperature,
    1 for greedy; before penalty, truncation and banned ids, so a training forward reproduces it).
    """

    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    prompt_index: int
    sample_index: int
    thinking: bool = False
    text: str | None = None
    logprobs: list[float] | None = None
    budget_cut_at: int | None = None

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class _Row:
    """Decoding state of one output row."""

    max_new: int
    budget: int | None
    thinking: bool
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reasoning: int = 0
    in_reasoning: bool = False
    budget_cut_at: int | None = None
    finish: str | None = None


def opens_thinking(input_ids: Tensor, attention_mask: Tensor, think_open_id: int, think_close_id: int) -> list[bool]:
    """Per row: the prompt's last ``<think>`` comes after its last ``</think>`` (the generation prompt opened
    reasoning, as the chat template's ``enable_thinking=True`` does)."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    real = attention_mask.bool()
    last_open = torch.where(real & (input_ids == think_open_id), positions, -1).amax(1)
    last_close = torch.where(real & (input_ids == think_close_id), positions, -1).amax(1)
    return (last_open > last_close).tolist()


def _per_prompt(value, prompts: int, name: str) -> list:
    if isinstance(value, tuple):
        if len(value) != prompts:
            raise ValueError(f"{name} has {len(value)} values for {prompts} prompts")
        return list(value)
    return [value] * prompts


def _choose(logits: Tensor, rows: list[_Row], seen: Tensor, config: GenerationConfig) -> tuple[Tensor, Tensor | None]:
    """Next token [A] of every row still decoding (and its log-prob under the raw logits), from logits [A, V]."""
    temperature = config.temperature if config.do_sample else 1.0
    logprobs = torch.log_softmax(logits / temperature, -1) if config.return_logprobs else None
    logits = penalize_repeats(logits, seen, config.repetition_penalty)
    if config.banned_token_ids:
        logits[:, list(config.banned_token_ids)] = float("-inf")
    early = [i for i, row in enumerate(rows) if len(row.tokens) < config.min_new_tokens]
    if early and config.stop_token_ids:
        logits[torch.tensor(early)[:, None], torch.tensor(config.stop_token_ids)[None]] = float("-inf")
    if config.do_sample:
        probs = truncate(logits / temperature, config.top_k, config.top_p).softmax(-1)
        generators = [row.generator for row in rows] if config.seed is not None else None
        tokens = draw(probs, generators)
    else:
        tokens = logits.argmax(-1)
    forced = [i for i, row in enumerate(rows) if row.in_reasoning and row.budget is not None
              and row.reasoning >= row.budget]
    if forced:
        tokens[forced] = config.think_close_id
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1) if logprobs is not None else None
    return tokens, chosen


def _advance(row: _Row, token: int, logprob: float | None, think_close_id: int | None, stops: set[int]) -> None:
    """Record ``token`` in ``row`` and decide whether the row is done."""
    if row.in_reasoning:
        if token == think_close_id:
            row.in_reasoning = False
            if row.budget is not None and row.reasoning >= row.budget:
                row.budget_cut_at = len(row.tokens)  # forced by _choose
        else:
            row.reasoning += 1
    row.tokens.append(token)
    if logprob is not None:
        row.logprobs.append(logprob)
    if token in stops:
        row.finish = "budget" if row.budget_cut_at is not None else "stop"
    elif len(row.tokens) >= row.max_new:
        row.finish = "length"


@torch.no_grad()
def generate(llm: nn.Module, inputs_embeds: Tensor, attention_mask: Tensor, config: GenerationConfig, *,
             thinking: Sequence[bool] | None = None, streamer=None, tokenizer=None) -> list[Completion]:
    """Decode continuations of every prompt row (see the module docstring).

    Args:
        llm: a transformers causal LM (``forward(inputs_embeds, attention_mask, position_ids,
            past_key_values, use_cache, logits_to_keep)``).
        inputs_embeds: [B, T, D] prompt embeddings, left padded.
        attention_mask: [B, T], 1/True on real tokens.
        config: decoding settings.
        thinking: per prompt, whether its generation prompt opened ``<think>`` (see ``opens_thinking``);
            the thinking budget applies to those rows only. Default: none did.
        streamer: ``put(token_ids)`` / ``end()``; needs exactly one output row.
        tokenizer: decodes ``Completion.text`` when given.

    Returns:
        B * num_samples completions, prompt-major (prompt 0's samples first).
    """
    prompts, samples = inputs_embeds.shape[0], config.num_samples
    if streamer is not None and prompts * samples != 1:
        raise ValueError(f"a streamer follows one row; this call generates {prompts} x {samples}")
    thinking = list(thinking) if thinking is not None else [False] * prompts
    limits, budgets = _per_prompt(config.max_new_tokens, prompts, "max_new_tokens"), \
        _per_prompt(config.thinking_budget, prompts, "thinking_budget")
    if len(thinking) != prompts:
        raise ValueError(f"thinking has {len(thinking)} values for {prompts} prompts")
    device = inputs_embeds.device
    rows = [_Row(limits[p], budgets[p], thinking[p], _generator(config.seed, p * samples + s, device),
                 in_reasoning=thinking[p]) for p in range(prompts) for s in range(samples)]
    mask = attention_mask.long()
    cache = DynamicCache()  # filled in place by every forward
    cache_arg = {cache_keyword(llm): cache}
    logits = llm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                 use_cache=True, logits_to_keep=1, **cache_arg).logits[:, -1].float()
    if samples > 1:
        cache.batch_repeat_interleave(samples)
        logits, mask = logits.repeat_interleave(samples, 0), mask.repeat_interleave(samples, 0)
    vocab = logits.shape[-1]
    seen = torch.zeros(len(rows), vocab, dtype=torch.bool, device=device)
    alive = list(range(len(rows)))
    stops = set(config.stop_token_ids)
    embed = llm.get_input_embeddings()
    if streamer is not None:
        streamer.put(torch.empty(1, 0, dtype=torch.long))
    try:
        while True:
            tokens, chosen = _choose(logits, [rows[r] for r in alive], seen[alive], config)
            if streamer is not None:
                streamer.put(tokens.cpu())
            seen[alive, tokens] = True
            logprobs = chosen.tolist() if chosen is not None else [None] * len(alive)
            for r, token, logprob in zip(alive, tokens.tolist(), logprobs):
                _advance(rows[r], token, logprob, config.think_close_id, stops)
            keep = [i for i, r in enumerate(alive) if rows[r].finish is None]
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, tokens = mask[index], tokens[index]
                alive = [alive[i] for i in keep]
            positions = mask.sum(1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], 1)
            logits = llm(inputs_embeds=embed(tokens[:, None]), attention_mask=mask, position_ids=positions,
                         use_cache=True, **cache_arg).logits[:, -1].float()
    finally:
        if streamer is not None:
            streamer.end()
    prompt_tokens = attention_mask.long().sum(1).tolist()
    return [Completion(token_ids=row.tokens, finish_reason=row.finish, prompt_tokens=int(prompt_tokens[r // samples]),
                       prompt_index=r // samples, sample_index=r % samples, thinking=row.thinking,
                       text=tokenizer.decode(row.tokens, skip_special_tokens=True) if tokenizer is not None else None,
                       logprobs=row.logprobs if config.return_logprobs else None, budget_cut_at=row.budget_cut_at)
            for r, row in enumerate(rows)]


def cache_keyword(llm: nn.Module) -> str:
    """transformers >= 5.x names the cache argument ``cache`` (``past_key_values`` is deprecated)."""
    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


def _generator(seed: int | None, row: int, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed + row)
