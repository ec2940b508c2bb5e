"""Thinking-mode answers of the synthetic corpora (long-CoT SFT data): the format of the traces
(short templated steps about what is visible, no pixel coordinates, ending in the answer) and that
they are trained on."""

from __future__ import annotations

import re

import numpy as np
import pytest

from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.synthetic import REASONING, make_corpus
from blocks.data.synthetic.captions import place_name
from blocks.data.synthetic.scenes import SIDE_PLACES
from blocks.data.synthetic.shapes import Shape
from blocks.data.tokenizer import tiny_tokenizer


@pytest.mark.parametrize("name", REASONING)
def test_reasoning_adds_a_think_block_and_keeps_media_and_answer(name):
    plain, thinking = make_corpus(name, size=9), make_corpus(name, size=9, reasoning=True)
    for a, b in zip(plain, thinking):
        trace = b.meta["reasoning"]
        assert b.conversations[-1]["content"] == f"<think>\n{trace}\n</think>\n\n{a.answer}"
        assert b.answer == a.answer and b.conversations[0] == a.conversations[0]
        media_a = [np.asarray(i) for i in a.images] + [np.asarray(f) for v in a.videos for f in v.frames]
        media_b = [np.asarray(i) for i in b.images] + [np.asarray(f) for v in b.videos for f in v.frames]
        assert all((x == y).all() for x, y in zip(media_a, media_b, strict=True))


@pytest.mark.parametrize("name", REASONING)
def test_traces_are_short_templated_steps_that_end_in_the_answer(name):
    for record in make_corpus(name, size=60, reasoning=True):
        steps = record.meta["reasoning"].split("\n")
        assert steps[-1].startswith("So ") and steps[-1].endswith(f" {record.answer}."), steps
        # Digits only in the conclusion (a count's answer): no coordinates, sizes, line or frame numbers.
        assert not re.search(r"\d", "\n".join(steps[:-1])), steps
        assert 2 <= len(steps) <= 7 and len(record.meta["reasoning"]) <= 220, steps


def test_scene_traces_list_every_shape_from_left_to_right_with_its_place():
    for record in make_corpus("scenes", size=30, reasoning=True):
        *listed, _ = record.meta["reasoning"].split("\n")
        shapes = sorted(record.meta["shapes"], key=lambda s: s[2])
        assert len(listed) == len(shapes)
        for (kind, colour, x, y), line in zip(shapes, listed):
            # centres are rounded in meta: the place is the one of a nearby point
            places = {place_name(Shape(kind, colour, x + dx, y + dy, 0), 112) for dx in (-.5, .5) for dy in (-.5, .5)}
            assert any(line == f"{colour} {kind} at {place}" for place in places), (line, places)
        if record.task == "scene_position":  # the asked-about shape sits in the cell of the answer's side
            kind, colour, *_ = record.meta["shapes"][0]
            assert f"{colour} {kind} at {SIDE_PLACES[record.answer]}" in listed


def test_document_and_video_traces_state_what_is_in_the_media():
    for record in make_corpus("documents", size=12, reasoning=True, corruption={"targets": 2}):
        lines, trace = record.meta["lines"], record.meta["reasoning"]
        if record.task == "doc_knowledge":
            assert re.search(rf'says "[^"]*{record.answer}[^"]*"', trace)
            continue
        for text, row, quoted in zip(record.answer.split(" "), record.meta["target_rows"],
                                     re.findall(r'reads "([^"]*)"', trace), strict=True):
            assert text in quoted and quoted in lines and lines.index(quoted) != row  # the fact's other line
    for record in make_corpus("videos", size=30, reasoning=True):
        trace = record.meta["reasoning"]
        if record.task == "video_direction":
            (x0, y0), (x1, y1) = record.meta["path"][0], record.meta["path"][-1]
            start, end = re.match(r"The \w+ starts at the (\w+) and ends at the (\w+)\.", trace).groups()
            assert {"left": x0 < x1, "right": x0 > x1, "top": y0 < y1, "bottom": y0 > y1}[start]
            assert {"left": x1 < x0, "right": x1 > x0, "top": y1 < y0, "bottom": y1 > y0}[end]
        elif record.task == "video_flash":
            assert trace.split("\n")[0].count(" on") == int(record.answer)


def test_the_trace_is_trained_on_and_other_corpora_refuse_reasoning():
    tokenizer = tiny_tokenizer()
    processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(max_slice_nums=1, scale_resolution=112,
                                                             tokens_per_group=16, max_length=512))
    record = make_corpus("scenes", size=3, reasoning=True)[2]
    sample = processor(record, mode="train")
    learned = tokenizer.decode(sample.input_ids[sample.labels != -100])
    assert learned == f"<think>\n{record.meta['reasoning']}\n</think>\n\n{record.answer}<|im_end|>"
    with pytest.raises(TypeError, match="reasoning"):
        make_corpus("captions", size=1, reasoning=True)


@pytest.mark.slow
def test_a_tiny_model_learns_to_think_in_a_few_dozen_steps():
    """Learnable traces: from random weights, 60 steps on thinking-mode samples bring the trace loss far
    below uniform, and greedy thinking-mode generation closes its think block and answers within 64 new
    tokens on >= 90% of every corpus's held-out prompts. The traces before docs/thinking_mode.md's
    rewrite (pixel coordinates, line and frame numbers) reach 29 of 48 here (long traces)."""
    import torch
    from torch.utils.data import ConcatDataset

    from assemblies.presets import mcpv45_tiny
    from blocks.answers import parse_completion
    from blocks.batch import IGNORE_INDEX, collate

    tokenizer = tiny_tokenizer()
    model = mcpv45_tiny()
    config = ProcessorConfig(max_slice_nums=1, scale_resolution=112, tokens_per_group=model.resampler.tokens_per_group)
    processor = MiniCPMVProcessor(tokenizer, config)
    # Records are made on access: only the 960 of the 1440 that the 60 steps draw are built and processed.
    train = ConcatDataset([make_corpus(name, size=480, reasoning=True) for name in REASONING])
    heldout = [r for name in REASONING for r in make_corpus(name, size=16, split="heldout", reasoning=True)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    for step in range(60):
        samples = [processor(train[int(i)]) for i in order[step * 16:(step + 1) * 16]]
        loss = model(collate(samples, tokenizer.pad_token_id)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    batch = collate([processor(r) for r in heldout], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(batch).logits[:, :-1]
    targets = batch.labels[:, 1:]
    in_trace = (targets != IGNORE_INDEX) & ((targets == tokenizer.convert_tokens_to_ids("</think>")).cumsum(1) == 0)
    trace_loss = torch.nn.functional.cross_entropy(logits[in_trace], targets[in_trace]).item()
    assert trace_loss < 0.25 * np.log(len(tokenizer))  # uniform: log(vocabulary) = 6.9 nats

    thinking = MiniCPMVProcessor(tokenizer, ProcessorConfig(**{**config.__dict__, "enable_thinking": True}))
    prompts = collate([thinking(r, mode="inference") for r in heldout], tokenizer.pad_token_id, padding_side="left")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    completions = model.generate(prompts, max_new_tokens=64, stop_token_ids=(im_end,), tokenizer=tokenizer)
    texts = [completion.text for completion in completions]
    for i, name in enumerate(REASONING):
        corpus_texts = texts[i * 16:(i + 1) * 16]
        well_formed = sum(parse_completion(text, "long").well_formed for text in corpus_texts)
        assert well_formed >= 0.9 * len(corpus_texts), (name, corpus_texts[:3])
