"""Built-in corpora for training and evaluating a tiny model offline.

``make_corpus(name, size, seed, split, **options)`` builds one by name; ``tokenizer_corpus(n)``
yields representative text of every task for training a small BPE tokenizer.

======== ============================================== ===================================
name     tasks                                          options
======== ============================================== ===================================
captions caption                                        image_size
digits   digit (real scans from scikit-learn)           image_size (seed unused: fixed set)
documents doc_ocr, doc_knowledge, doc_corrupt           corruption, layout, reasoning
scenes   scene_count, scene_colour, scene_position      image_size, reasoning
videos   video_direction, video_order, video_flash      frame_size, reasoning
======== ============================================== ===================================

Every corpus also takes ``tasks=[...]`` to generate a subset (all but ``digits``). ``reasoning=True``
gives thinking-mode answers (``<think>`` trace, then the answer) for long-CoT SFT.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from blocks.data.chat import THINK_CLOSE
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record
from blocks.data.synthetic.base import SPLITS, SyntheticCorpus, conversation
from blocks.data.synthetic.captions import CaptionCorpus
from blocks.data.synthetic.documents import DocumentCorpus
from blocks.data.synthetic.scenes import SceneCorpus
from blocks.data.synthetic.videos import VideoCorpus

CORPORA: dict[str, type[SyntheticCorpus]] = {c.name: c for c in (CaptionCorpus, DocumentCorpus, SceneCorpus,
                                                                  VideoCorpus)}
# Corpora that can answer in thinking mode (``reasoning=True``).
REASONING = ("documents", "scenes", "videos")
# `blocks.data.digits` builds on this package's base module, so it is imported when used, not here.
NAMES = tuple(sorted([*CORPORA, "digits"]))

__all__ = ["CORPORA", "NAMES", "REASONING", "SPLITS", "CaptionCorpus", "DocumentCorpus", "SceneCorpus",
           "SyntheticCorpus", "VideoCorpus", "conversation", "make_corpus", "record_texts", "tokenizer_corpus"]


def make_corpus(name: str, size: int | None = None, seed: int = 0, split: str = "train", **options) -> Sequence[Record]:
    """Build the corpus registered as ``name``.

    Args:
        name: one of ``NAMES``.
        size: number of records (required except for ``digits``, which defaults to its split size).
        seed: random stream of the synthetic corpora.
        split: ``"train"`` or ``"heldout"``.
        **options: corpus-specific keyword arguments (see the module docstring).
    """
    if name not in NAMES:
        raise ValueError(f"unknown corpus {name!r}; available: {list(NAMES)}")
    if name == "digits":
        from blocks.data.digits import DigitsCorpus

        return DigitsCorpus(split=split, size=size, **options)
    if size is None:
        raise ValueError(f"corpus {name!r} needs a size")
    return CORPORA[name](size=size, seed=seed, split=split, **options)


def record_texts(record: Record) -> Iterator[str]:
    """The strings of a record a tokenizer should cover: questions (without media markers), answers,
    reasoning traces (without the think tags) and the page text of documents."""
    for turn in record.conversations:
        text = turn["content"].replace(IMAGE_MARKER, "").replace(VIDEO_MARKER, "").strip()
        if THINK_CLOSE in text:
            yield record.meta["reasoning"]
            text = text.split(THINK_CLOSE)[-1].strip()
        if text:
            yield text
    yield from record.meta.get("lines", [])


def tokenizer_corpus(n: int = 5000, seed: int = 0) -> Iterator[str]:
    """``n`` strings covering every corpus's questions, answers, reasoning traces, document lines and captions.

    Records are taken round-robin from all corpora (train split; those in ``REASONING`` also in
    thinking mode), so every task is represented in any prefix. Media are rendered along the way;
    about 9,000 strings per second on one core.
    """
    sources = ([make_corpus(name, size=n, seed=seed) for name in NAMES]
               + [make_corpus(name, size=n, seed=seed, reasoning=True) for name in REASONING])
    produced = 0
    for i in range(n):
        for corpus in sources:
            for text in record_texts(corpus[i]):
                yield text
                produced += 1
                if produced == n:
                    return
