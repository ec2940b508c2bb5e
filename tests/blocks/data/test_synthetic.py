"""The common corpus interface: determinism, split disjointness, record format, media size, registry."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record
from blocks.data.synthetic import NAMES, make_corpus, record_texts, tokenizer_corpus

SYNTHETIC = [name for name in NAMES if name != "digits"]


def media(record: Record) -> list:
    return record.images + [frame for clip in record.videos for frame in clip.frames]


def fingerprint(record: Record, with_text: bool = True) -> str:
    """Hash of every pixel (and string) of a record."""
    h = hashlib.sha256()
    for image in media(record):
        h.update(np.asarray(image).tobytes())
    if with_text:
        h.update(repr((record.conversations, record.answer, record.task)).encode())
    return h.hexdigest()


def test_registry_names():
    assert NAMES == ("captions", "digits", "documents", "scenes", "videos")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_seed_same_records_and_index_access_is_stateless(name):
    a, b = make_corpus(name, size=9, seed=3), make_corpus(name, size=9, seed=3)
    forward = [fingerprint(r) for r in a]
    # Reverse order and a fresh object: item i depends on (seed, split, i) only.
    assert [fingerprint(b[i]) for i in reversed(range(9))][::-1] == forward
    assert fingerprint(a[-1]) == forward[-1]
    other_seed = [fingerprint(r) for r in make_corpus(name, size=9, seed=4)]
    assert not set(other_seed) & set(forward)


@pytest.mark.parametrize("name", NAMES)
def test_train_and_heldout_are_disjoint(name):
    n = 60
    # Pixels alone must differ, not just the record ids or wording.
    train = {fingerprint(r, with_text=False) for r in make_corpus(name, size=n, seed=0, split="train")}
    heldout = {fingerprint(r, with_text=False) for r in make_corpus(name, size=n, seed=0, split="heldout")}
    assert len(train) == len(heldout) == n
    assert not train & heldout


@pytest.mark.parametrize("name", NAMES)
def test_record_format_markers_and_small_media(name):
    corpus = make_corpus(name, size=30, seed=1, split="heldout")
    assert len(corpus) == 30
    tasks = set()
    for record in corpus:
        tasks.add(record.task)
        user, assistant = record.conversations
        assert user["role"] == "user" and assistant["role"] == "assistant"
        marker = VIDEO_MARKER if record.videos else IMAGE_MARKER
        assert user["content"].startswith(marker + "\n") and user["content"].count(marker) == 1
        assert len(record.images) + len(record.videos) == 1
        assert assistant["content"] == record.answer and record.answer.strip() == record.answer != ""
        assert IMAGE_MARKER not in assistant["content"] and VIDEO_MARKER not in assistant["content"]
        for image in media(record):
            assert image.mode == "RGB" and max(image.size) <= 112 and min(image.size) >= 56
    assert tasks == set(corpus.chance)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_tasks_rotate_and_can_be_selected(name):
    corpus = make_corpus(name, size=12)
    tasks = list(corpus.chance)
    assert [r.task for r in corpus] == [tasks[i % len(tasks)] for i in range(12)]
    only = make_corpus(name, size=4, tasks=[tasks[-1]])
    assert {r.task for r in only} == {tasks[-1]} and list(only.chance) == [tasks[-1]]
    with pytest.raises(ValueError, match="unknown or empty tasks"):
        make_corpus(name, size=4, tasks=["nope"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown corpus 'nope'"):
        make_corpus("nope", size=1)
    with pytest.raises(ValueError, match="split must be one of"):
        make_corpus("scenes", size=1, split="test")
    with pytest.raises(ValueError, match="needs a size"):
        make_corpus("scenes")
    with pytest.raises(IndexError):
        make_corpus("scenes", size=2)[2]


def test_slicing_returns_records():
    corpus = make_corpus("captions", size=5)
    assert [r.id for r in corpus[1:3]] == [corpus[1].id, corpus[2].id] == ["captions-train-0-1", "captions-train-0-2"]


def test_tokenizer_corpus_covers_every_task_and_is_deterministic():
    texts = list(tokenizer_corpus(600, seed=0))
    assert len(texts) == 600 and texts == list(tokenizer_corpus(600, seed=0))
    joined = "\n".join(texts)
    assert IMAGE_MARKER not in joined and VIDEO_MARKER not in joined
    # Questions, answers and page text of every corpus.
    for needle in ("What digit is this?", "How many", "colour", "Which way", "flash", "capital of",
                   " is in ", "Describe the image.", "left"):
        assert needle in joined, needle
    record = make_corpus("documents", size=2, tasks=["doc_knowledge"])[0]
    texts = list(record_texts(record))
    assert texts[1] == record.answer and texts[2:] == record.meta["lines"] and len(texts) == 2 + 8
