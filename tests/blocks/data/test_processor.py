"""Processor behaviour beyond the goldens: length budget, video groups, modes, bad samples, media order."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image

from blocks.batch import collate
from blocks.data.errors import SampleError, SampleTooLong
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.record import Record, VideoClip
from blocks.data.tokenizer import tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = ["Describe the picture.", "A red square.", "What happens in the video?", "It moves."] * 30
    return tiny_tokenizer(texts, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


def image(w: int, h: int, value: int = 100) -> Image.Image:
    return Image.new("RGB", (w, h), (value, 50, 200))


def video(n_groups: int, per_group: int = 2, size=(56, 56)) -> VideoClip:
    groups = [[g * 10 + f for f in range(per_group)] for g in range(n_groups)]
    return VideoClip(frames=[image(*size, value=g) for g in range(n_groups) for _ in range(per_group)], groups=groups)


def qa(question: str, **media) -> Record:
    return Record(id="s1", conversations=[{"role": "user", "content": question},
                                          {"role": "assistant", "content": "A red square."}],
                  meta={"where": "f.jsonl:3"}, **media)


def test_slices_are_reduced_before_anything_else(tok):
    record = qa("<image>\nDescribe the picture.", images=[image(1344, 1344)])
    full = MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=8))(record)
    assert full.meta["max_slice_nums"] == 9 and len(full.tgt_sizes) == 10
    limit = full.num_tokens - 5
    short = MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=8, max_length=limit))(record)
    assert short.num_tokens <= limit
    assert short.meta["max_slice_nums"] == 8  # 3x3 -> 2x4: one slice (10 tokens) less, one more row break
    assert len(short.tgt_sizes) == 9 and short.patches.shape[0] == int(short.tgt_sizes.prod(1).sum())
    assert (short.labels != -100).sum() == (full.labels != -100).sum()  # the answer is intact
    tiny = MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=8, max_length=40))(record)
    assert tiny.meta["max_slice_nums"] == 1 and len(tiny.tgt_sizes) == 1


def test_video_groups_are_dropped_evenly(tok):
    record = qa("<video>\nWhat happens in the video?", videos=[video(10)])
    processor = MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=6))
    full = processor(record)
    assert full.group_sizes.tolist() == [2] * 10 and full.temporal_ids[:4].tolist() == [0, 1, 10, 11]
    per_group = (full.num_tokens - processor(qa("<video>", videos=[video(1)])).num_tokens) // 9
    config = ProcessorConfig(tokens_per_group=6, max_length=full.num_tokens - 5 * per_group)
    limited = MiniCPMVProcessor(tok, config)(record)
    assert limited.meta["video_groups_dropped"] == 5
    assert limited.temporal_ids[::2].tolist() == [10, 30, 50, 70, 90]  # bin centres of 10 groups -> 1, 3, 5, 7, 9
    assert len(limited.image_bound) == 5


def test_too_long_raises_naming_the_sample(tok):
    record = qa("<video><image>\nDescribe the picture.", videos=[video(3)], images=[image(900, 900)])
    with pytest.raises(SampleTooLong, match=r"\[f.jsonl:3\] sample 's1'.*max_length 20"):
        MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=6, max_length=20))(record)


def test_media_follow_text_order_across_turns(tok):
    record = Record(id="mix", images=[image(40, 30), image(30, 40)], videos=[video(2, per_group=3, size=(28, 42))],
                    conversations=[{"role": "user", "content": "<video> then <image>"},
                                   {"role": "assistant", "content": "It moves."},
                                   {"role": "user", "content": "and <image>?"}, {"role": "assistant", "content": "ok"}])
    sample = MiniCPMVProcessor(tok, ProcessorConfig(max_slice_nums=1, tokens_per_group=5))(record)
    assert sample.temporal_ids.tolist() == [0, 1, 2, 10, 11, 12, -1, -1]
    assert sample.group_sizes.tolist() == [3, 3, 1, 1]
    frame, first, second = (tuple(t) for t in sample.tgt_sizes[[0, 6, 7]].tolist())
    assert first[1] > first[0] and second[0] > second[1]  # landscape image first, portrait second
    assert sample.image_bound[:, 0].tolist() == sorted(sample.image_bound[:, 0].tolist())
    batch = collate([sample, sample], pad_id=tok.pad_token_id)
    assert batch.num_groups == 8 and batch.image_bound[4:, 0].tolist() == [1] * 4


def test_tokens_per_group_callable(tok):
    # e.g. a projector yielding one token per 4 patches of the group's frames
    per_patches = lambda sizes: sum(h * w for h, w in sizes) // 4  # noqa: E731
    record = qa("<video><image>", videos=[video(2, size=(56, 28))], images=[image(28, 28)])
    config = ProcessorConfig(max_slice_nums=1, scale_resolution=56, tokens_per_group=per_patches)
    sample = MiniCPMVProcessor(tok, config)(record)
    lengths = (sample.image_bound[:, 1] - sample.image_bound[:, 0]).tolist()
    sizes = sample.tgt_sizes.prod(1).tolist()
    assert lengths == [(sizes[0] + sizes[1]) // 4, (sizes[2] + sizes[3]) // 4, sizes[4] // 4]


def test_inference_mode(tok):
    record = qa("<image>\nDescribe the picture.", images=[image(50, 50)])
    for thinking, ending in ((False, "<think>\n\n</think>\n\n"), (True, "<think>\n")):
        sample = MiniCPMVProcessor(tok, ProcessorConfig(enable_thinking=thinking))(record, mode="inference")
        text = tok.decode(sample.input_ids)
        assert text.endswith("<|im_start|>assistant\n" + ending) and "A red square" not in text
        assert sample.labels is None and len(sample.image_bound) == 1
    with pytest.raises(ValueError, match="mode"):
        MiniCPMVProcessor(tok)(record, mode="eval")


def test_bad_samples(tok):
    processor = MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=4))
    record = qa("<image> and <image>", images=[image(20, 20), image(20, 20)])
    record.images.pop()  # e.g. a loader dropped an unreadable file
    with pytest.raises(SampleError, match=r"f.jsonl:3.*2 <image> markers for 1 images"):
        processor(record)
    with pytest.raises(SampleError, match="visual spans"):
        processor(qa("a literal <slice> tag in the text"))
    with pytest.raises(SampleError, match="final assistant turn"):
        processor(Record(id="x", conversations=[{"role": "user", "content": "hi"}]))
    with pytest.raises(SampleError, match="role 'bot'"):
        processor(Record(id="x", conversations=[{"role": "bot", "content": "hi"}]))
    text_only = processor(qa("Describe the picture."))
    assert text_only.patches.shape == (0, 588) and len(text_only.image_bound) == 0


def test_processor_pickles_for_spawned_workers(tok):
    processor = MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=7))
    clone = pickle.loads(pickle.dumps(processor))
    record = qa("<image>\nDescribe the picture.", images=[image(40, 40)])
    assert torch.equal(clone(record).input_ids, processor(record).input_ids)
    with pytest.raises(ValueError, match=">= 1"):
        MiniCPMVProcessor(tok, ProcessorConfig(tokens_per_group=0))
