"""The shipped real held-out set: scikit-learn's digits as small RGB images."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from blocks.data.digits import DigitsCorpus, split_indices
from blocks.data.record import IMAGE_MARKER
from blocks.data.synthetic import make_corpus


def test_fixed_split_sizes_and_disjoint_scans():
    train, heldout = split_indices("train"), split_indices("heldout")
    assert (len(train), len(heldout)) == (1433, 364)
    assert not set(train) & set(heldout) and len(set(train) | set(heldout)) == 1797
    assert len(DigitsCorpus("heldout")) == 364 and len(make_corpus("digits", split="train")) == 1433
    with pytest.raises(ValueError, match="split must be one of"):
        split_indices("test")


def test_classes_are_balanced_and_chance_is_a_tenth():
    corpus = DigitsCorpus("heldout")
    counts = Counter(record.answer for record in corpus)
    assert set(counts) == {str(d) for d in range(10)}
    assert all(35 <= c <= 37 for c in counts.values()), counts
    assert corpus.chance == {"digit": 0.1}


def test_record_is_white_ink_on_black_and_matches_its_scan():
    from sklearn.datasets import load_digits

    digits = load_digits()
    record = DigitsCorpus("train", image_size=56)[3]
    index = record.meta["scan_index"]
    assert record.answer == str(digits.target[index]) and record.task == "digit"
    assert record.conversations[0]["content"] == f"{IMAGE_MARKER}\nWhat digit is this?"
    image = np.asarray(record.images[0])
    assert image.shape == (56, 56, 3) and (image[..., 0] == image[..., 1]).all()
    # Downsampling the upscaled image back to 8x8 recovers the scan (ink = bright).
    coarse = image[..., 0].reshape(8, 7, 8, 7).mean(axis=(1, 3)) / 255 * 16
    assert np.corrcoef(coarse.ravel(), digits.images[index].ravel())[0, 1] > 0.95


def test_train_size_cycles_and_is_deterministic():
    corpus = make_corpus("digits", size=1500, split="train", image_size=28)
    assert len(corpus) == 1500 and corpus[1433].meta == corpus[0].meta
    fresh = DigitsCorpus("train", image_size=28)
    assert np.array_equal(np.asarray(corpus[5].images[0]), np.asarray(fresh[5].images[0]))
    with pytest.raises(IndexError):
        corpus[1500]


def test_heldout_stops_at_its_scans_with_a_warning(caplog):
    corpus = make_corpus("digits", size=400, split="heldout", image_size=28)
    assert len(corpus) == 364 and len({record.id for record in corpus}) == 364
    assert "364 scans; 400 asked" in caplog.text
