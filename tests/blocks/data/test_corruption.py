"""The unified OCR + knowledge corruption block: level frequencies, what each level does to the
pixels, determinism, target choice, and the shipped YAML config."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from blocks.data.corruption import CorruptionConfig, Level, corrupt_document, padded, sample_levels
from blocks.data.synthetic import make_corpus
from blocks.data.synthetic.documents import MULTI_OCR_QUESTIONS, random_page

CONF = Path(__file__).resolve().parents[3] / "conf" / "corruption"


def page(seed: int = 0):
    image, regions, facts, _ = random_page(random.Random(seed))
    return image, regions, facts


def within(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(count - n * p) < sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_sample_levels_follows_configured_probabilities():
    probs = {"clean": 0.1, "light": 0.2, "heavy": 0.3, "masked": 0.4}
    config = CorruptionConfig(probabilities=probs)
    n = 4000
    counts = Counter(sample_levels(n, config, random.Random(0)))
    assert all(within(counts[k], n, p) for k, p in probs.items()), counts
    never = CorruptionConfig(probabilities={"clean": 1.0, "masked": 0.0})
    assert set(sample_levels(200, never, random.Random(0))) == {"clean"}


def test_document_corpus_applies_levels_with_configured_frequencies():
    probs = {"clean": 0.4, "light": 0.1, "heavy": 0.2, "masked": 0.3}
    corpus = make_corpus("documents", size=400, tasks=["doc_corrupt"], corruption={"probabilities": probs})
    counts = Counter(level for record in corpus for level in record.meta["levels"])
    assert sum(counts.values()) == 400
    assert all(within(counts[k], 400, p) for k, p in probs.items()), counts


@pytest.mark.parametrize("level", ["clean", "light", "heavy", "masked"])
def test_each_level_changes_only_the_target_region(level):
    image, regions, _ = page(1)
    config = CorruptionConfig()
    doc = corrupt_document(image, regions, config, random.Random(5), levels=[level])
    (target,) = doc.targets
    assert doc.levels == [level] and target in regions
    before, after = np.asarray(image).astype(int), np.asarray(doc.image).astype(int)
    x0, y0, x1, y1 = padded(target.box, config.pad, image.size)
    outside = np.ones(before.shape[:2], bool)
    outside[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = False  # the region and its outline
    assert (before[outside] == after[outside]).all()
    outline = after[y0 - 1, x0 - 1:x1 + 1]
    assert (outline == config.mark_colour).all()
    inside_before, inside_after = before[y0:y1, x0:x1], after[y0:y1, x0:x1]
    changed = np.abs(inside_before - inside_after).mean()
    if level == "clean":
        assert changed == 0
    elif level == "masked":
        # Fully hidden: one flat grey, although the original had ink there.
        assert (inside_after == config.levels["masked"].fill).all()
        assert (inside_before < 100).all(-1).sum() > 10
    else:
        assert changed > 5


def test_light_stays_closer_to_the_text_than_heavy():
    """Correlation of the corrupted region with the clean text, averaged over pages: light keeps the
    glyphs (readable), heavy mostly destroys them (ambiguous)."""
    config = CorruptionConfig()
    corr = {"light": [], "heavy": []}
    for seed in range(12):
        image, regions, _ = page(seed)
        for level in corr:
            doc = corrupt_document(image, regions, config, random.Random(seed), levels=[level])
            x0, y0, x1, y1 = padded(doc.targets[0].box, config.pad, image.size)
            a = np.asarray(image.convert("L"))[y0:y1, x0:x1].ravel().astype(float)
            b = np.asarray(doc.image.convert("L"))[y0:y1, x0:x1].ravel().astype(float)
            corr[level].append(np.corrcoef(a, b)[0, 1])
    light, heavy = np.mean(corr["light"]), np.mean(corr["heavy"])
    assert light > 0.75 and heavy < 0.6 and light - heavy > 0.25, (light, heavy)


def test_same_stream_same_pixels():
    image, regions, _ = page(2)
    a = corrupt_document(image, regions, CorruptionConfig(), random.Random(9))
    b = corrupt_document(image, regions, CorruptionConfig(), random.Random(9))
    assert a.levels == b.levels and a.targets == b.targets
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    first = make_corpus("documents", size=3, seed=7, tasks=["doc_corrupt"])[2]
    again = make_corpus("documents", size=3, seed=7, tasks=["doc_corrupt"])[2]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


def test_targets_come_from_distinct_facts_in_reading_order():
    image, regions, facts = page(3)
    config = CorruptionConfig(targets=3, probabilities={"masked": 1.0})
    doc = corrupt_document(image, regions, config, random.Random(0))
    assert len({t.group for t in doc.targets}) == 3 and doc.levels == ["masked"] * 3
    assert [t.box[1] for t in doc.targets] == sorted(t.box[1] for t in doc.targets)
    # Every masked word is still stated elsewhere on the page (its fact's twin statement).
    for target in doc.targets:
        twins = [r for r in regions if r.text == target.text and r.box != target.box]
        assert len(twins) == 1 and twins[0].group == target.group
    record = make_corpus("documents", size=1, tasks=["doc_corrupt"], corruption={"targets": 2})[0]
    assert len(record.answer.split()) == 2 and record.conversations[0]["content"].split("\n")[1] in MULTI_OCR_QUESTIONS
    assert make_corpus("documents", size=1, corruption={"targets": 2}).chance["doc_corrupt"] == pytest.approx(1 / 24**2)


def test_bad_config_is_reported():
    with pytest.raises(ValueError, match="no definition"):
        CorruptionConfig(probabilities={"smudged": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        CorruptionConfig(probabilities={"clean": 0.0})
    with pytest.raises(ValueError, match="targets must be >= 1"):
        CorruptionConfig(targets=0)
    image, regions, _ = page(0)
    with pytest.raises(ValueError, match="distinct groups"):
        corrupt_document(image, regions, CorruptionConfig(targets=4), random.Random(0))
    with pytest.raises(ValueError, match="unknown corruption levels"):
        corrupt_document(image, regions, CorruptionConfig(), random.Random(0), levels=["smudged"])
    with pytest.raises(ValueError, match="at most 3 targets"):
        make_corpus("documents", size=1, corruption={"targets": 4})


def test_shipped_yaml_is_the_dataclass_default():
    default = yaml.safe_load((CONF / "default.yaml").read_text())
    assert CorruptionConfig.from_dict(default) == CorruptionConfig()
    # Hydra hands over DictConfig/ListConfig rather than dicts/lists.
    assert CorruptionConfig.from_dict(OmegaConf.load(CONF / "default.yaml")) == CorruptionConfig()
    assert CorruptionConfig().levels["light"] == Level(noise_std=(25.0, 40.0), blur_radius=(0.3, 0.6))
