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


def run_case(golden_dir, tokenizer, k: int):
    meta, _, images = golden_case(golden_dir, k)
    call, kwargs = meta["processor_call"], meta["chat_kwargs"]
    config = ProcessorConfig(max_slice_nums=call["effective_max_slice_nums"],
                             use_image_id=call["effective_use_image_id"],
                             enable_thinking=kwargs.get("enable_thinking", False))
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
        assert (sample.labels == -100).all()  # inference: no labels
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
