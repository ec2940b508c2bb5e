"""Thinking-mode answers of the synthetic corpora (long-CoT SFT data)."""

from __future__ import annotations

import numpy as np
import pytest

from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.synthetic import REASONING, make_corpus
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
        assert trace.strip() and a.answer in trace.splitlines()[-1]  # the last step concludes the answer


def test_traces_state_what_is_in_the_media():
    for record in make_corpus("documents", size=12, reasoning=True, corruption={"targets": 2}):
        lines = record.meta["lines"]
        if record.task == "doc_knowledge":
            continue
        for text, row in zip(record.answer.split(" "), record.meta["target_rows"]):
            assert text in lines[row]  # the boxed word really is on the line the trace names
            assert f"line {row + 1} is" in record.meta["reasoning"]
    for record in make_corpus("videos", size=12, reasoning=True, tasks=["video_direction"]):
        (x0, y0), (x1, y1) = record.meta["path"][0], record.meta["path"][-1]
        moved = {"left": x1 < x0, "right": x1 > x0, "up": y1 < y0, "down": y1 > y0}
        assert moved[record.answer]
    for record in make_corpus("scenes", size=6, reasoning=True, tasks=["scene_count"]):
        assert record.meta["reasoning"].count(" at (") == int(record.answer)


def test_the_trace_is_trained_on_and_other_corpora_refuse_reasoning():
    tokenizer = tiny_tokenizer()
    processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(max_slice_nums=1, scale_resolution=112,
                                                             tokens_per_group=16))
    record = make_corpus("scenes", size=3, reasoning=True)[2]
    sample = processor(record, mode="train")
    learned = tokenizer.decode(sample.input_ids[sample.labels != -100])
    assert record.meta["reasoning"].splitlines()[-1] in learned and learned.rstrip().endswith("<|im_end|>")
    with pytest.raises(TypeError, match="reasoning"):
        make_corpus("captions", size=1, reasoning=True)
