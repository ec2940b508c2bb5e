"""Tokenizers: local loading of the official one; the tiny cached BPE and its special tokens."""

from __future__ import annotations

import json

import pytest

import blocks.data.tokenizer as tokenizer_module
from blocks.data.chat import QWEN3_CHAT_TEMPLATE, render_chat
from blocks.data.tokenizer import ADDED_TOKENS, load_tokenizer, tiny_tokenizer

TEXTS = ["What digit is this? It is 7.", "a yellow circle at the top left of the picture",
         "Describe the video: the square moves to the right.", "Read all the text in the image."] * 40
CHAT = [{"role": "user", "content": "<image>\nWhat digit?"}, {"role": "assistant", "content": "It is 7."}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tokenizer(TEXTS, cache_dir=tmp_path_factory.mktemp("tok"))


def test_tiny_has_official_added_tokens_and_template(tiny):
    assert len(tiny) <= 1024
    ids = tiny.convert_tokens_to_ids([t for t, _ in ADDED_TOKENS])
    assert ids == list(range(len(ADDED_TOKENS)))  # first ids, in the official order
    assert (tiny.pad_token, tiny.eos_token, tiny.bos_token, tiny.unk_token) == \
        ("<|endoftext|>", "<|im_end|>", "<|im_start|>", "<unk>")
    assert tiny.chat_template == QWEN3_CHAT_TEMPLATE
    text = tiny.apply_chat_template(CHAT, tokenize=False)
    assert text == render_chat(CHAT).text
    # every marker is one token; <think> is kept by skip_special_tokens like in the official tokenizer
    encoded = tiny.encode("<image><unk></image><slice></slice><image_id>3</image_id><think>x</think>")
    assert len(encoded) == 11
    assert tiny.decode(encoded, skip_special_tokens=True) == "3<think>x</think>"


def test_tiny_round_trips_any_text(tiny):
    for text in ["Ünïcode ✓ 漢字 and emoji 🙂", "tabs\tand\n\nnewlines  ", "numbers 1234567890"]:
        assert tiny.decode(tiny.encode(text)) == text
    # frequent words become single tokens, digits stay single (Qwen split)
    assert tiny.tokenize("assistant") == ["assistant"]
    assert tiny.tokenize(" 42") == ["Ġ", "4", "2"]


def test_tiny_is_deterministic_and_cached(tmp_path, monkeypatch):
    first = tiny_tokenizer(TEXTS, vocab_size=400, cache_dir=tmp_path / "a")
    second = tiny_tokenizer(TEXTS, vocab_size=400, cache_dir=tmp_path / "b")
    (dir_a,), (dir_b,) = (list((tmp_path / d / "tokenizers").iterdir()) for d in "ab")
    assert dir_a.name == dir_b.name
    model_a = json.loads((dir_a / "tokenizer.json").read_text())["model"]
    assert model_a == json.loads((dir_b / "tokenizer.json").read_text())["model"]
    assert len(first) == len(second) <= 400
    monkeypatch.setattr(tokenizer_module, "_train_tiny", lambda *a: pytest.fail("retrained despite the cache"))
    assert tiny_tokenizer(TEXTS, vocab_size=400, cache_dir=tmp_path / "a").get_vocab() == first.get_vocab()


def test_tiny_cache_key_depends_on_texts_and_size():
    key = tokenizer_module._cache_key
    assert key(["a", "b"], 512) != key(["ab"], 512) != key(["a", "b"], 1024)
    assert key(["a", "b"], 512) == key(["a", "b"], 512)


def test_tiny_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_tokenizer(TEXTS, vocab_size=200, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        tiny_tokenizer([], cache_dir=tmp_path)


def test_load_tokenizer_local_dirs(tiny, tmp_path, reference_dir):
    tiny.save_pretrained(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.encode("It is 7.") == tiny.encode("It is 7.")
    official = load_tokenizer(reference_dir)
    assert official.convert_tokens_to_ids("<unk>") == 128244 and official.encode("!") == [0]
    assert official.chat_template == QWEN3_CHAT_TEMPLATE
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


@pytest.mark.slow
def test_tiny_default_corpus(tmp_path):
    tok = tiny_tokenizer(cache_dir=tmp_path)
    assert 400 < len(tok) <= 1024
    assert tok.tokenize("What colour") == ["What", "Ġcolour"]
