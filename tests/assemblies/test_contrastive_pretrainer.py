"""Contrastive pre-training of the tiny assembly's vision tower and resampler on dense captions."""

from __future__ import annotations

import pytest
import torch

from assemblies.contrastive import ContrastivePretrainer, caption_matches, captions
from assemblies.presets import mcpv45_tiny
from assemblies.training.metrics import RetrievalAccuracy
from blocks.batch import IGNORE_INDEX, collate
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.synthetic import make_corpus
from blocks.data.tokenizer import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _batch(tokenizer, size: int = 6):
    processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(tokens_per_group=16, max_slice_nums=1,
                                                             scale_resolution=112))
    records = make_corpus("captions", size=size, tasks=["dense_caption"])
    return collate([processor(r, mode="train") for r in records], tokenizer.pad_token_id), records


def test_pairs_every_image_with_every_caption_and_trains_only_vision_resampler_head(tokenizer):
    model = mcpv45_tiny()
    pretrainer = ContrastivePretrainer(model, vocab_size=len(tokenizer))
    batch, _ = _batch(tokenizer)
    out = pretrainer(batch)
    assert out.logits.shape == (6, 6) and torch.isfinite(out.loss)
    out.loss.backward()
    for block in (pretrainer.vpm, pretrainer.resampler, pretrainer.contrastive):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    assert pretrainer.vpm is model.vpm and pretrainer.resampler is model.resampler  # trained in place
    assert not any(name.startswith("llm") for name, _ in pretrainer.named_parameters())


def test_the_caption_is_the_samples_supervised_text(tokenizer):
    pretrainer = ContrastivePretrainer(mcpv45_tiny(), vocab_size=len(tokenizer)).eval()
    batch, records = _batch(tokenizer, size=3)
    row = 1
    caption = batch.input_ids[row][batch.labels[row] != IGNORE_INDEX]
    assert records[row].answer in tokenizer.decode(caption)
    direct = pretrainer.contrastive.text(caption[None], torch.ones(1, len(caption), dtype=torch.bool))
    with torch.no_grad():
        assert torch.allclose(pretrainer.embed_texts(*captions(batch))[row], direct[0], atol=1e-5)


def test_captions_longer_than_the_text_tower_are_cut_to_its_length(tokenizer):
    pretrainer = ContrastivePretrainer(mcpv45_tiny(), vocab_size=len(tokenizer), max_text_length=4).eval()
    batch, _ = _batch(tokenizer, size=2)
    ids, mask = captions(batch)
    assert mask.sum(1).min() > 4
    with torch.no_grad():
        assert torch.allclose(pretrainer.embed_texts(ids, mask), pretrainer.contrastive.text(ids[:, :4], mask[:, :4]))


def test_samples_with_the_same_caption_match_each_other(tokenizer):
    processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(tokens_per_group=16, max_slice_nums=1,
                                                             scale_resolution=112))
    records = make_corpus("documents", size=12, tasks=["doc_ocr"])  # boxed words: a 24-word vocabulary
    batch = collate([processor(r, mode="train") for r in records], tokenizer.pad_token_id)
    out = ContrastivePretrainer(mcpv45_tiny(), vocab_size=len(tokenizer))(batch)
    same = torch.tensor([[a.answer == b.answer for b in records] for a in records])
    assert same.sum() > len(records)  # the test needs a repeated word
    assert torch.equal(out.matches, same)


def test_retrieval_chance_is_the_most_common_caption_of_each_batch(tokenizer):
    processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(tokens_per_group=16, max_slice_nums=1,
                                                             scale_resolution=112))
    words = make_corpus("documents", size=12, tasks=["doc_ocr"])
    dense, dense_records = _batch(tokenizer, size=6)
    loader = [collate([processor(r, mode="train") for r in words], tokenizer.pad_token_id), dense]
    blind_hits = sum(max(answers.count(a) for a in answers)
                     for answers in ([r.answer for r in words], [r.answer for r in dense_records]))
    assert blind_hits > 2  # a word repeats, so the chance is above one per batch size
    metric = RetrievalAccuracy()
    for batch in loader:
        matches = caption_matches(*captions(batch))
        metric.update(torch.randn(len(matches), len(matches)), matches)
    assert metric.compute()["chance"] == pytest.approx(blind_hits / 18)


def test_a_few_steps_score_matched_pairs_above_the_others(tokenizer):
    # The official resampler init: the tiny default's region init starts slower (README, "Position").
    model = mcpv45_tiny(overrides=["dims.resampler_region_grid=null"])
    pretrainer = ContrastivePretrainer(model, vocab_size=len(tokenizer))
    batch, _ = _batch(tokenizer, size=8)
    # 3e-3 collapses with some tokenizers (the loss falls to ~3 through the logit bias alone, margin 0).
    optimizer = torch.optim.AdamW(pretrainer.parameters(), lr=3e-4)

    def margin(logits):  # mean matched-pair logit minus mean unmatched one
        diagonal = logits.diag().sum()
        return (diagonal / 8 - (logits.sum() - diagonal) / 56).item()

    first = pretrainer(batch)
    for _ in range(60):
        loss = pretrainer(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = pretrainer(batch)
    assert abs(margin(first.logits)) < 0.5 and margin(out.logits) > 2.0
    assert out.loss.item() < first.loss.item() / 2


def test_a_resampler_with_a_varying_token_count_is_refused_clearly(tokenizer):
    model = mcpv45_tiny(overrides=["resampler=mlp", "model.resampler.pooled_size=null"])  # one token per patch
    pretrainer = ContrastivePretrainer(model, vocab_size=len(tokenizer))
    batch, _ = _batch(tokenizer, size=2)
    with pytest.raises(ValueError, match="tokens per visual group"):
        pretrainer(batch)


def test_a_sample_without_a_caption_is_refused_by_name(tokenizer):
    pretrainer = ContrastivePretrainer(mcpv45_tiny(), vocab_size=len(tokenizer))
    batch, records = _batch(tokenizer, size=2)
    batch.labels[1] = IGNORE_INDEX
    with pytest.raises(ValueError, match=f"sample {records[1].id!r}: contrastive pre-training needs a caption"):
        pretrainer(batch)
