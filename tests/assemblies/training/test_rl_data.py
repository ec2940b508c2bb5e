"""RL prompts: modes in the generation prompt, references, verifier routing, resume, and the policy forward."""

from __future__ import annotations

import pytest
import torch

from assemblies.presets import mcpv45_tiny
from assemblies.training.rl_data import ModedBatchSampler, PromptCollate, PromptDataset, reference_answer
from assemblies.training.rollouts import pad_completions, policy_logprobs, sample_rollouts
from assemblies.training.sampling import MixtureBatchSampler
from blocks.batch import collate, select_rows
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.record import Record
from blocks.data.synthetic import make_corpus
from blocks.data.tokenizer import tiny_tokenizer
from blocks.generation import GenerationConfig
from blocks.generation.tokens import generation_token_ids
from blocks.rl import ModeScheduler


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    tokenizer, model = tiny_tokenizer(), mcpv45_tiny().eval()
    processors = {mode: MiniCPMVProcessor(tokenizer, ProcessorConfig(
        max_slice_nums=1, scale_resolution=112, tokens_per_group=model.resampler.tokens_per_group,
        enable_thinking=mode == "long")) for mode in ("short", "long")}
    process = {mode: (lambda record, p=p: p(record, mode="inference")) for mode, p in processors.items()}
    return tokenizer, model, process


def dataset(process, verifiers=None) -> PromptDataset:
    corpora = [make_corpus("scenes", size=6, split="heldout"), make_corpus("videos", size=6, split="heldout")]
    return PromptDataset(corpora, ["scenes", "videos"], process, verifiers)


def test_the_generation_prompt_opens_the_mode(parts):
    tokenizer, _, process = parts
    prompts = dataset(process, {"videos": "exact"})
    short, long = prompts[(0, "short")], prompts[(7, "long")]
    assert tokenizer.decode(short.sample.input_ids[-8:]).endswith("assistant\n<think>\n\n</think>\n\n")
    assert tokenizer.decode(long.sample.input_ids[-4:]).endswith("assistant\n<think>\n")
    assert short.sample.labels is None and short.mode == "short" and long.mode == "long"
    assert short.reference == make_corpus("scenes", size=6, split="heldout")[0].answer
    assert short.meta["verifier"] == "auto" and long.meta["verifier"] == "exact" and long.task.startswith("video")


def test_reference_is_the_answer_else_the_last_assistant_turn_after_its_reasoning():
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nsteps\n</think>\n\n42"}]
    assert reference_answer(Record("a", turns)) == "42"
    assert reference_answer(Record("b", turns, answer="7")) == "7"
    assert reference_answer(Record("c", turns[:1])) is None


def test_unknown_verifier_kinds_are_refused(parts):
    with pytest.raises(ValueError, match="unknown kinds"):
        dataset(parts[2], {"scenes": "fuzzy"})


def test_a_resumed_sampler_draws_the_same_prompts_in_the_same_modes():
    def sampler(start: int) -> ModedBatchSampler:
        inner = MixtureBatchSampler([6, 6], [0.5, 0.5], batch_size=8, num_batches=6, seed=3, start_step=start)
        return ModedBatchSampler(inner, ModeScheduler("hybrid", seed=3))

    full, resumed = list(sampler(0)), list(sampler(4))
    assert resumed == full[4:]
    modes = [mode for batch in full for _, mode in batch]
    assert {"short", "long"} == set(modes) and 0.3 < modes.count("long") / len(modes) < 0.7


def test_prompt_batch_is_left_padded_and_counts_skips(parts):
    tokenizer, _, process = parts
    prompts = dataset(process)
    bad = {"short": lambda record: (_ for _ in ()).throw(ValueError("broken"))}
    items = [prompts[(0, "short")], prompts[(7, "long")], PromptDataset([[prompts.records[0]]], ["x"], bad)[(0, "short")]]
    batch = PromptCollate(tokenizer.pad_token_id)(items)
    assert batch.batch_size == 2 and batch.modes == ["short", "long"] and len(batch.batch.skipped) == 1
    assert bool(batch.attention_mask[:, -1].all())  # left padded: every prompt ends at the last column


def test_select_rows_embeds_exactly_the_rows_of_the_whole_batch(parts):
    tokenizer, model, process = parts
    prompts = dataset(process)
    batch = collate([prompts[(i, "short")].sample for i in (0, 7, 2, 9)], tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad():
        whole = model.embed(batch)
        part = model.embed(select_rows(batch, [3, 0]))
    assert torch.equal(part, whole[[3, 0]])


def test_policy_logprobs_of_sampled_completions_equal_the_engines(parts):
    # The first GRPO update's ratio is exactly the sampling policy's: the training forward (prompt embedded
    # once, repeated per sample) reproduces the engine's log-probs.
    tokenizer, model, process = parts
    prompts = dataset(process)
    batch = collate([prompts[(i, m)].sample for i, m in ((0, "short"), (7, "long"))], tokenizer.pad_token_id,
                    padding_side="left")
    config = GenerationConfig(**generation_token_ids(tokenizer), do_sample=True, num_samples=3, seed=5,
                              max_new_tokens=(4, 7), return_logprobs=True)
    completions = sample_rollouts(model, batch, config, tokenizer)
    assert [c.generated_tokens for c in completions][:3] != [0, 0, 0] and len(completions) == 6
    ids, mask = pad_completions([c.token_ids for c in completions], tokenizer.pad_token_id)
    with torch.no_grad():
        scores = policy_logprobs(model, batch, 3, ids, mask, with_entropy=True)
    for row, completion in enumerate(completions):
        n = completion.generated_tokens
        assert torch.allclose(scores.logprobs[row, :n], torch.tensor(completion.logprobs), atol=1e-5)
        assert (scores.logprobs[row, n:] == 0).all() and (scores.entropy[row, :n] > 0).all()
    chunked = sample_rollouts(model, batch, config, tokenizer, chunk_prompts=1)
    assert [c.token_ids for c in chunked] == [c.token_ids for c in completions]


def test_shared_prompt_prefill_gives_the_full_forwards_logprobs_and_gradients(parts):
    tokenizer, _, process = parts
    torch.manual_seed(1)
    model = mcpv45_tiny().train()
    prompts = dataset(process)
    batch = collate([prompts[(i, "long")].sample for i in (1, 8)], tokenizer.pad_token_id, padding_side="left")
    ids, mask = pad_completions([[5, 9, 2], [7], [11, 4], [3, 3, 3]], tokenizer.pad_token_id)
    results = []
    for checkpointing in (True, False):  # on: the whole sequence per row; off: the prompt's cache repeated
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        logprobs = policy_logprobs(model, batch, 2, ids, mask).logprobs
        logprobs.sum().backward()
        results.append((logprobs.detach(), model.vpm.embeddings.patch_embedding.weight.grad.clone()))
    (full, full_grad), (shared, shared_grad) = results
    assert torch.allclose(full, shared, atol=1e-5) and (full[mask] != 0).all()
    assert torch.allclose(full_grad, shared_grad, atol=1e-5) and full_grad.abs().sum() > 0


def test_fsdp_style_checkpoint_wrappers_also_switch_the_shared_prefill_off(parts):
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    from assemblies.training.rollouts import activation_checkpointed
    from blocks.llm import layer_classes

    model = mcpv45_tiny()
    assert not activation_checkpointed(model.llm)
    apply_activation_checkpointing(model.llm, check_fn=lambda m: isinstance(m, tuple(layer_classes(model.llm))))
    assert activation_checkpointed(model.llm)
