"""Processor parity with the official MiniCPM-V 4.5 chat() + processor on all 9 golden cases."""

from __future__ import annotations

import pytest
import torch

from blocks.batch import Sample, collate
from blocks.data.official_batch import official_batch
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.tokenizer import load_tokenizer
from golden_helpers import golden_case, sha256_f32


@pytest.fixture(scope="module")
def official_tokenizer(reference_dir):
    return load_tokenizer(reference_dir)


def test_official_tokenizer_ids(official_tokenizer):
    tok = official_tokenizer
    tokens = ["<unk>", "!", "<|im_start|>", "<|im_end|>", "<image>", "</image>", "<slice>", "</slice>", "<image_id>",
              "</image_id>", "<think>", "</think>", "<|endoftext|>"]
    assert tok.convert_tokens_to_ids(tokens) == [128244, 0, 151644, 151645, 151669, 151670, 151679, 151680, 151681,
                                                 151682, 151667, 151668, 151643]
    assert tok.encode("Hi!") == [13048, 0]  # quirks.json exclamation_is_id_0
    assert len(tok) == 151748


def run_case(golden_dir, tokenizer, k: int, **changes):
    meta, _, images = golden_case(golden_dir, k)
    call, kwargs = meta["processor_call"], meta["chat_kwargs"]
    config = ProcessorConfig(**{"max_slice_nums": call["effective_max_slice_nums"],
                                "use_image_id": call["effective_use_image_id"],
                                "enable_thinking": kwargs.get("enable_thinking", False), **changes})
    pictures = [img for _, img in images]
    conversations = meta["messages"] if meta["batched"] else [meta["messages"]]
    chat_inputs = [[{"role": m["role"], "content": [item["text"] if item["type"] == "text" else pictures[item["index"]]
                                                     for item in m["content"]]} for m in conversation]
                   for conversation in conversations]
    temporal = [call["temporal_ids"]] if call["temporal_ids"] else None
    out = official_batch(MiniCPMVProcessor(tokenizer, config), chat_inputs, temporal_ids=temporal,
                         system_prompt=kwargs.get("system_prompt"))
    return meta, out


@pytest.mark.parametrize("k", range(9))
def test_golden_case(golden_dir, official_tokenizer, k):
    meta, out = run_case(golden_dir, official_tokenizer, k)
    assert out["prompts"] == meta["prompts"]
    assert out["input_ids"].tolist() == meta["input_ids"]
    assert out["attention_mask"].int().tolist() == meta["attention_mask"]
    assert [b.tolist() for b in out["image_bound"]] == meta["image_bound"]
    assert [t.tolist() for t in out["tgt_sizes"]] == meta["tgt_sizes"]
    assert out["temporal_ids"] == meta["temporal_ids"]
    assert [[sha256_f32(x) for x in b] for b in out["pixel_values"]] == \
        [[x["sha256"] for x in b] for b in meta["pixel_values"]]
    for sample, ids, text in zip(out["samples"], meta["unpadded_input_ids"], meta["expanded_texts"]):
        assert sample.input_ids.tolist() == ids
        assert sample.labels is None  # inference: no labels
        assert int(sample.group_sizes.sum()) == len(sample.tgt_sizes)
        assert official_tokenizer.decode(sample.input_ids) == text


def test_video_groups_are_packed_frames(golden_dir, official_tokenizer):
    _, out = run_case(golden_dir, official_tokenizer, 4)
    sample = out["samples"][0]
    assert sample.group_sizes.tolist() == [3, 3]
    assert sample.temporal_ids.tolist() == [0, 5, 10, 15, 20, 25]
    assert (sample.image_bound[:, 1] - sample.image_bound[:, 0]).tolist() == [64, 64]


def test_case8_our_mask_differs_exactly_at_exclamation_marks(golden_dir, official_tokenizer):
    meta, out = run_case(golden_dir, official_tokenizer, 8)
    ours = collate(out["samples"], pad_id=official_tokenizer.pad_token_id, padding_side="left").attention_mask[0]
    official = torch.tensor(meta["attention_mask"][0], dtype=torch.bool)
    ids = torch.tensor(meta["input_ids"][0])
    assert ours.all()
    assert torch.equal(ours != official, ids == official_tokenizer.convert_tokens_to_ids("!"))
    assert int((ids == 0).sum()) == 2  # "Hello! Nice to meet you!"


def test_batch_left_padding_matches_collate(golden_dir, official_tokenizer):
    meta, out = run_case(golden_dir, official_tokenizer, 7)
    batch = collate(out["samples"], pad_id=0, padding_side="left")
    assert batch.input_ids.tolist() == meta["input_ids"]
    assert batch.image_bound[:, 1:].tolist() == [b for item in meta["image_bound"] for b in item]
    assert batch.attention_mask.sum(1).tolist() == [len(ids) for ids in meta["unpadded_input_ids"]]
    assert isinstance(out["samples"][0], Sample)


def test_video_with_use_image_id_names_each_group_by_its_first_frame(golden_dir, official_tokenizer):
    """The official processor's rule (get_slice_image_placeholder(size, i, ...) for every unskipped frame
    tag i) applied to golden case 4: ids 0 and 3 before the two groups of three frames."""
    meta, out = run_case(golden_dir, official_tokenizer, 4, use_image_id=True)
    expected = meta["expanded_texts"][0].replace("<image>", "<image_id>0</image_id><image>", 1)
    first_group_end = expected.index("</image>") + len("</image>")
    expected = expected[:first_group_end] + expected[first_group_end:].replace(
        "<image>", "<image_id>3</image_id><image>", 1)
    sample = out["samples"][0]
    assert official_tokenizer.decode(sample.input_ids) == expected
    assert (sample.image_bound[:, 1] - sample.image_bound[:, 0]).tolist() == [64, 64]
    # Our processor's own default for video is the model card's: no ids, whatever use_image_id says.
    plain = MiniCPMVProcessor(official_tokenizer, ProcessorConfig(max_slice_nums=1, use_image_id=True))
    assert official_tokenizer.decode(plain(_record_of_case4(golden_dir), mode="inference").input_ids) == \
        meta["expanded_texts"][0]


def _record_of_case4(golden_dir):
    from blocks.data.messages import record_from_messages
    meta, _, images = golden_case(golden_dir, 4)
    pictures = [img for _, img in images]
    messages = [{"role": m["role"], "content": [item["text"] if item["type"] == "text" else pictures[item["index"]]
                                                for item in m["content"]]} for m in meta["messages"]]
    return record_from_messages(messages, temporal_ids=meta["processor_call"]["temporal_ids"])


def test_official_batch_refuses_frames_the_official_processor_would_slice(golden_dir, official_tokenizer):
    with pytest.raises(ValueError, match="would slice frames of size"):
        run_case(golden_dir, official_tokenizer, 4, max_slice_nums=9, scale_resolution=28)  # 64x48 frames
