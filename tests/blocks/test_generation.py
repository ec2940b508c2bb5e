"""The generation engine on tiny random Qwen3 LMs: equivalences, stops, budget, banned ids, sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import TextIteratorStreamer

from blocks.batch import position_ids_from_mask
from blocks.data.tokenizer import tiny_tokenizer
from blocks.generation import GenerationConfig, generate, opens_thinking
from blocks.generation.sampling import penalize_repeats, truncate
from blocks.generation.tokens import generation_token_ids, placeholder_token_ids
from blocks.llm import qwen3, qwen3_tiny


@pytest.fixture(scope="module")
def llm() -> nn.Module:
    torch.manual_seed(0)
    return qwen3_tiny().eval()


def prompts(lengths: list[int], dim: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompt embeddings [B, T, D] and their mask."""
    g = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    embeds = torch.randn(len(lengths), longest, dim, generator=g)
    mask = torch.zeros(len(lengths), longest, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, longest - n:] = True
        embeds[row, :longest - n] = 0
    return embeds, mask


def greedy_uncached(llm, embeds, mask, steps: int) -> list[list[int]]:
    """The reference: the whole sequence through the LM at every step, no cache."""
    mask, tokens = mask.long(), []
    for _ in range(steps):
        logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                     use_cache=False).logits[:, -1]
        token = logits.argmax(-1)
        tokens.append(token)
        embeds = torch.cat([embeds, llm.get_input_embeddings()(token)[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(tokens, 1).tolist()


def ids(completions) -> list[list[int]]:
    return [c.token_ids for c in completions]


def test_cached_equals_uncached_greedy(llm):
    embeds, mask = prompts([4, 9])
    out = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=12))
    assert ids(out) == greedy_uncached(llm, embeds, mask, 12)
    assert [c.finish_reason for c in out] == ["length", "length"] and [c.prompt_tokens for c in out] == [4, 9]


def test_batched_left_padded_equals_one_by_one(llm):
    embeds, mask = prompts([3, 10, 6])
    batched = ids(generate(llm, embeds, mask, GenerationConfig(max_new_tokens=10)))
    for row in range(3):
        alone = generate(llm, embeds[row:row + 1, ~mask[row].logical_not()], mask[row:row + 1, mask[row]],
                         GenerationConfig(max_new_tokens=10))
        assert batched[row] == alone[0].token_ids


def test_shared_prefill_equals_independent_prefills(llm):
    embeds, mask = prompts([7])
    config = GenerationConfig(max_new_tokens=10, do_sample=True, num_samples=4, seed=11, return_logprobs=True)
    shared = generate(llm, embeds, mask, config)
    assert [(c.prompt_index, c.sample_index) for c in shared] == [(0, s) for s in range(4)]
    assert len({tuple(c.token_ids) for c in shared}) > 1  # the samples differ from each other
    for s, sample in enumerate(shared):
        alone = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=10, do_sample=True, seed=11 + s,
                                                             return_logprobs=True))[0]
        assert sample.token_ids == alone.token_ids
        assert torch.allclose(torch.tensor(sample.logprobs), torch.tensor(alone.logprobs), atol=1e-5)


def test_logprobs_are_the_raw_temperature_scaled_ones(llm):
    embeds, mask = prompts([5])
    out = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=1, do_sample=True, temperature=0.5, seed=3,
                                                       top_k=5, repetition_penalty=1.3, return_logprobs=True))[0]
    logits = llm(inputs_embeds=embeds, attention_mask=mask.long()).logits[0, -1]
    assert out.logprobs[0] == pytest.approx(torch.log_softmax(logits / 0.5, -1)[out.token_ids[0]].item(), abs=1e-5)


def test_stop_ids_end_a_row_while_others_continue(llm):
    embeds, mask = prompts([5, 8])
    free = ids(generate(llm, embeds, mask, GenerationConfig(max_new_tokens=10)))
    first = next(t for t in free[0][2:] if t not in free[1] and free[0].index(t) >= 2)
    second = next(t for t in free[1][4:] if t not in free[0] and t != first)
    out = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=10, stop_token_ids=(first, second, 1023)))
    end0, end1 = free[0].index(first) + 1, free[1].index(second) + 1
    assert ids(out) == [free[0][:end0], free[1][:end1]]  # each ends on its own stop id, included
    assert [c.finish_reason for c in out] == ["stop", "stop"]
    late = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=10, stop_token_ids=(first,),
                                                        min_new_tokens=end0 + 1))
    assert late[0].token_ids[:end0 - 1] == free[0][:end0 - 1] and late[0].token_ids[end0 - 1] != first
    assert late[1].token_ids == free[1] and late[1].finish_reason == "length"


def test_thinking_budget_forces_the_close_after_exactly_n_reasoning_tokens(llm):
    embeds, mask = prompts([6, 6], seed=4)
    free = ids(generate(llm, embeds, mask, GenerationConfig(max_new_tokens=12)))
    close = next(t for t in range(1024) if t not in free[0] and t not in free[1])
    config = GenerationConfig(max_new_tokens=12, think_close_id=close, thinking_budget=3)
    out = generate(llm, embeds, mask, config, thinking=[True, False])
    assert out[0].token_ids[:3] == free[0][:3] and out[0].token_ids[3] == close and out[0].budget_cut_at == 3
    assert len(out[0].token_ids) == 12 and out[0].token_ids[4:] != free[0][4:]  # the answer follows
    assert out[1].token_ids == free[1] and out[1].budget_cut_at is None  # its prompt did not open <think>
    stop = out[0].token_ids[6]
    if stop not in out[0].token_ids[:6]:
        ended = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=12, think_close_id=close,
                                                             thinking_budget=(3, None), stop_token_ids=(stop,)),
                         thinking=[True, False])[0]
        assert ended.token_ids == out[0].token_ids[:7] and ended.finish_reason == "budget"
    # A reasoning that closes by itself before the budget is left alone.
    natural = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=12, think_close_id=free[0][1],
                                                           thinking_budget=5), thinking=[True, True])
    assert natural[0].token_ids == free[0] and natural[0].budget_cut_at is None
    zero = generate(llm, embeds, mask, GenerationConfig(max_new_tokens=3, think_close_id=close, thinking_budget=0),
                    thinking=[True, True])
    assert [c.token_ids[0] for c in zero] == [close, close]


class Biased(nn.Module):
    """An LM whose logits favour some ids by ``bonus`` (to make placeholders the likeliest tokens)."""

    def __init__(self, llm: nn.Module, favoured: list[int], bonus: float = 30.0) -> None:
        super().__init__()
        self.llm, self.bias = llm, torch.zeros(llm.config.vocab_size)
        self.bias[favoured] = bonus

    def forward(self, cache=None, **kwargs):
        out = self.llm(cache=cache, **kwargs)
        out.logits = out.logits + self.bias
        return out

    def get_input_embeddings(self):
        return self.llm.get_input_embeddings()


def test_banned_placeholder_ids_are_never_emitted(llm):
    banned = [3, 17, 500]
    biased = Biased(llm, banned)
    embeds, mask = prompts([4, 6])
    assert set(ids(generate(biased, embeds, mask, GenerationConfig(max_new_tokens=5)))[0]) <= set(banned)
    for config in (GenerationConfig(max_new_tokens=5, banned_token_ids=banned),
                   GenerationConfig(max_new_tokens=5, banned_token_ids=banned, do_sample=True, temperature=5.0,
                                    num_samples=50, seed=0)):
        emitted = {t for c in generate(biased, embeds, mask, config) for t in c.token_ids}
        assert emitted and not emitted & set(banned)


def test_sampling_defaults_draw_from_the_untruncated_softmax():
    torch.manual_seed(0)
    small = qwen3(256, 64, 1, 4, 2, 16, 128).eval()
    embeds, mask = prompts([5])
    probs = small(inputs_embeds=embeds, attention_mask=mask.long()).logits[0, -1].softmax(-1)
    assert GenerationConfig().top_k == 0 and GenerationConfig().top_p == 1.0  # no hidden top_k=50

    def empirical(**sampling) -> torch.Tensor:
        out = generate(small, embeds, mask, GenerationConfig(max_new_tokens=1, do_sample=True, num_samples=20000,
                                                             **sampling))
        return torch.bincount(torch.tensor([c.token_ids[0] for c in out]), minlength=256).float() / 20000

    torch.manual_seed(1)
    assert (empirical() - probs).abs().sum() / 2 < 0.06  # total variation; sampling noise alone is ~0.04
    assert (empirical(top_k=50) - probs).abs().sum() / 2 > 0.5  # what a hidden top_k=50 would do


def test_repetition_penalty_and_truncation_rules():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert penalize_repeats(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 0.0]]
    assert torch.isinf(truncate(logits, top_k=2)).tolist() == [[False, True, False, True]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isinf(truncate(probs, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(truncate(probs, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(truncate(probs, top_p=0.1)).tolist() == [[False, True, True, True]]


def test_repetition_penalty_stops_greedy_repeats(llm):
    embeds, mask = prompts([5])
    repeated = ids(generate(llm, embeds, mask, GenerationConfig(max_new_tokens=40)))[0]
    penalized = ids(generate(llm, embeds, mask, GenerationConfig(max_new_tokens=40, repetition_penalty=1e4)))[0]
    assert len(set(repeated)) < 40 and len(set(penalized)) == 40


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="only when sampling"):
        GenerationConfig(temperature=0.7)
    with pytest.raises(ValueError, match="think_close_id"):
        GenerationConfig(thinking_budget=10)
    with pytest.raises(ValueError, match="max_new_tokens >= 1"):
        GenerationConfig(max_new_tokens=(4, 0))
    with pytest.raises(ValueError, match="2 values for 3 prompts"):
        generate(qwen3_tiny(), *prompts([2, 3, 4]), GenerationConfig(max_new_tokens=(4, 5)))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = ["The red square is left of the blue circle.", "Count the shapes: 3.", "<think>\nreasoning\n</think>"]
    return tiny_tokenizer(texts * 20, vocab_size=300, cache_dir=tmp_path_factory.mktemp("tok"))


def test_streamed_pieces_join_to_the_text(tok):
    torch.manual_seed(0)
    small = qwen3(len(tok), 64, 2, 4, 2, 16, 128).eval()
    embeds, mask = prompts([6])
    config = GenerationConfig(max_new_tokens=40, do_sample=True, seed=5)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    streamed = generate(small, embeds, mask, config, streamer=streamer, tokenizer=tok)[0]
    pieces = list(streamer)
    assert len(pieces) > 1 and "".join(pieces) == streamed.text
    assert generate(small, embeds, mask, config, tokenizer=tok)[0].text == streamed.text
    with pytest.raises(ValueError, match="one row"):
        generate(small, embeds, mask, GenerationConfig(num_samples=2), streamer=streamer)


def test_token_ids_from_the_tokenizer(tok):
    fields = generation_token_ids(tok)
    assert tok.convert_ids_to_tokens(list(fields["stop_token_ids"])) == ["<|im_end|>", "<|endoftext|>"]
    assert set(tok.convert_ids_to_tokens(list(placeholder_token_ids(tok)))) == {
        "<unk>", "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>"}
    text = ["<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "<|im_start|>user\nhi"]
    encoded = tok(text, padding=True, padding_side="left", return_tensors="pt")
    assert opens_thinking(encoded.input_ids, encoded.attention_mask, fields["think_open_id"],
                          fields["think_close_id"]) == [True, False, False]
