"""The training data module under a token budget: real per-sample lengths, mixed long and short corpora."""

from __future__ import annotations

import functools
import random

from assemblies.training.datamodule import MultimodalDataModule, build_processor
from blocks.data.record import Record
from blocks.data.synthetic import make_corpus
from blocks.data.tokenizer import tiny_tokenizer

WORDS = ["red", "blue", "circle", "square", "left", "right", "top", "bottom"]


def _text_corpus(split: str, size: int, seed: int) -> list[Record]:
    """Text answers of 4 words for the first four records (what a probe of the first records sees), then of
    4 to 240 words."""
    rng = random.Random(f"{split}/{seed}")
    words = [4] * 4 + [rng.randint(4, 240) for _ in range(size - 4)]
    return [Record(id=f"text{i}", conversations=[{"role": "user", "content": "Describe it."},
                                                 {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=n))}])
            for i, n in enumerate(words)]


def test_no_training_batch_exceeds_max_tokens_with_long_and_short_samples():
    tokenizer = tiny_tokenizer()
    processor = build_processor(tokenizer, 16, max_length=512, max_slice_nums=1, scale_resolution=112)
    data = MultimodalDataModule(
        corpora={"scenes": functools.partial(make_corpus, "scenes"), "text": _text_corpus},
        process=functools.partial(processor, mode="train"), pad_id=tokenizer.pad_token_id,
        mix={"scenes": 0.85, "text": 0.15}, heldout=[], num_batches=24, batch_size=16, train_size=64,
        max_tokens=1024, count_tokens=functools.partial(processor.count_tokens, mode="train"))
    data.setup("fit")
    sizes = []
    for batch in data.train_dataloader():
        assert batch.input_ids.numel() <= 1024, (batch.input_ids.shape, batch.sample_ids)
        sizes.append(batch.batch_size)
    # Long answers cut batches short, short ones (the scenes, ~43 tokens) fill them up to 16.
    assert min(sizes) <= 4 and max(sizes) >= 12


def test_count_tokens_equals_the_built_samples_length():
    tokenizer = tiny_tokenizer()
    processor = build_processor(tokenizer, 16, max_length=512, max_slice_nums=1, scale_resolution=112)
    for record in [*make_corpus("videos", size=3), *_text_corpus("train", 6, 0)]:
        assert processor.count_tokens(record) == processor(record).num_tokens
