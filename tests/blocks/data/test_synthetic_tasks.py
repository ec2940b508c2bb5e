"""Each synthetic task: answers are balanced, chance is what the corpus reports, and the media really
contain the answer (counted objects, motion direction, flashes, the fact on the page)."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import numpy as np
import pytest

from blocks.data.synthetic import make_corpus
from blocks.data.synthetic.captions import caption_of
from blocks.data.synthetic.documents import CAPITALS, COUNTRIES, PageLayout
from blocks.data.synthetic.shapes import BACKGROUND, COLOURS, SHAPES, Shape
from blocks.data.synthetic.videos import count_runs, group_frames

# task -> (corpus, every possible answer)
BALANCED = {
    "scene_count": ("scenes", {str(n) for n in range(1, 7)}),
    "scene_colour": ("scenes", set(COLOURS)),
    "scene_position": ("scenes", {"left", "right", "top", "bottom"}),
    "video_direction": ("videos", {"left", "right", "up", "down"}),
    "video_flash": ("videos", {"1", "2", "3"}),
    "doc_ocr": ("documents", set(COUNTRIES) | set(CAPITALS)),
    "doc_knowledge": ("documents", set(CAPITALS)),
    "doc_corrupt": ("documents", set(COUNTRIES) | set(CAPITALS)),
}


def answers(corpus_name: str, task: str, n: int) -> list[str]:
    return [r.answer for r in make_corpus(corpus_name, size=n, seed=0, tasks=[task])]


@pytest.mark.parametrize("task", BALANCED)
def test_answers_are_uniform_and_chance_is_one_over_answers(task):
    corpus_name, expected = BALANCED[task]
    n = 30 * len(expected)
    counts = Counter(answers(corpus_name, task, n))
    assert set(counts) == expected
    # Binomial counts around n/k: 4.5 sigma bounds (fails on a systematic bias, not on noise).
    mean = n / len(expected)
    sigma = math.sqrt(mean * (1 - 1 / len(expected)))
    assert all(abs(c - mean) < 4.5 * sigma for c in counts.values()), counts
    assert make_corpus(corpus_name, size=1, tasks=[task]).chance[task] == pytest.approx(1 / len(expected))


def test_video_order_chance_is_one_half_from_the_question():
    corpus = make_corpus("videos", size=200, tasks=["video_order"])
    assert corpus.chance == {"video_order": 0.5}
    named_first = 0
    for record in corpus:
        a, b = re.search(r"the (\w+) (?:one )?or the (\w+) one", record.conversations[0]["content"]).groups()
        assert record.answer in (a, b) and a != b
        named_first += record.answer == a
    assert 70 < named_first < 130  # the answer is not given away by its position in the question


def test_caption_chance_is_the_most_frequent_caption():
    corpus = make_corpus("captions", size=1800, tasks=["caption"])
    counts = Counter(r.answer for r in corpus)
    assert corpus.chance["caption"] == pytest.approx(1 / 36)
    top = counts.most_common(1)[0][1] / len(corpus)
    assert 0.5 / 36 < top < 2.0 / 36


def test_scene_count_matches_drawn_objects():
    for record in make_corpus("scenes", size=24, tasks=["scene_count"]):
        assert len(record.meta["shapes"]) == int(record.answer)


def test_scene_colour_and_position_refer_to_the_only_object_of_that_kind():
    corpus = make_corpus("scenes", size=40, tasks=["scene_colour", "scene_position"])
    for record in corpus:
        kind = next(k for k in SHAPES if k in record.conversations[0]["content"])
        same_kind = [s for s in record.meta["shapes"] if s[0] == kind]
        assert len(same_kind) == 1
        _, colour, x, y = same_kind[0]
        if record.task == "scene_colour":
            assert colour == record.answer
            # The answer colour is really painted at the object's centre.
            assert tuple(np.asarray(record.images[0])[y, x]) == COLOURS[colour]
        else:
            third = record.images[0].width / 3
            side = {"left": x < third, "right": x > 2 * third, "top": y < third, "bottom": y > 2 * third}
            assert side[record.answer] and third <= (y if record.answer in ("left", "right") else x) <= 2 * third


def test_captions_name_objects_left_to_right():
    two = [r for r in make_corpus("captions", size=40, tasks=["caption"]) if " and " in r.answer]
    assert len(two) > 10
    for record in two:
        left, right = (part.split() for part in record.answer.split(" and "))
        pixels = np.asarray(record.images[0])
        half = pixels.shape[1] // 2
        # Each named colour is painted in its half (same-colour pairs are covered by both halves).
        assert (pixels[:, :half] == COLOURS[left[1]]).all(-1).any()
        assert (pixels[:, half:] == COLOURS[right[1]]).all(-1).any()
    shapes = [Shape("square", "blue", 80, 50, 10), Shape("circle", "red", 20, 50, 10)]
    assert caption_of(shapes) == "a red circle and a blue square"


def centroid(frame) -> tuple[float, float] | None:
    """Mean (x, y) of non-background pixels, None for an empty frame."""
    ys, xs = np.where((np.asarray(frame) != BACKGROUND).any(-1))
    return (xs.mean(), ys.mean()) if len(xs) else None


def test_video_direction_follows_the_moving_object():
    for record in make_corpus("videos", size=12, tasks=["video_direction"]):
        (clip,) = record.videos
        (x0, y0), (x1, y1) = centroid(clip.frames[0]), centroid(clip.frames[-1])
        dx, dy = x1 - x0, y1 - y0
        expected = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert record.answer == expected and max(abs(dx), abs(dy)) > 20


def test_video_flash_counts_visible_runs():
    for record in make_corpus("videos", size=15, tasks=["video_flash"]):
        visible = [centroid(f) is not None for f in record.videos[0].frames]
        assert count_runs(visible) == int(record.answer)


def test_video_order_first_object_appears_first():
    for record in make_corpus("videos", size=12, tasks=["video_order"]):
        frames = [np.asarray(f) for f in record.videos[0].frames]
        appears = {c: next(i for i, f in enumerate(frames) if (f == COLOURS[c]).all(-1).any())
                   for c in COLOURS if any((f == COLOURS[c]).all(-1).any() for f in frames)}
        assert len(appears) == 2 and min(appears, key=appears.get) == record.answer
        assert len(set(appears.values())) == 2


def test_video_groups_are_consecutive_frames_of_two_or_three():
    for record in make_corpus("videos", size=30, seed=2):
        clip = record.videos[0]
        sizes = [len(g) for g in clip.groups]
        assert 4 <= len(clip.frames) <= 6 and set(sizes) <= {2, 3}
        ids = [t for g in clip.groups for t in g]
        step = ids[1] - ids[0]
        assert step in (3, 5, 10) and ids == [i * step for i in range(len(ids))]
    with pytest.raises(ValueError, match="4-6 frames"):
        group_frames(7, random.Random(0))


def test_document_states_each_fact_twice_and_answers_from_the_page():
    for record in make_corpus("documents", size=12, tasks=["doc_knowledge"]):
        lines, facts = record.meta["lines"], record.meta["facts"]
        assert len(lines) == 8 and len(facts) == 3
        for country, capital in facts:
            both = [line for line in lines if country in line and capital in line]
            assert len(both) == 2
        country = next(c for c in COUNTRIES if c in record.conversations[0]["content"])
        assert (country, record.answer) in facts


def test_doc_ocr_box_holds_ink_and_names_a_fact_word():
    for record in make_corpus("documents", size=12, tasks=["doc_ocr"]):
        assert record.meta["levels"] == ["clean"]
        (x0, y0, x1, y1), = record.meta["target_boxes"]
        region = np.asarray(record.images[0])[y0:y1, x0:x1]
        assert (region < 100).all(-1).sum() > 10  # dark ink inside the box
        assert record.answer in {w for fact in record.meta["facts"] for w in fact}


LARGE_PRINT = {"font_size": 14, "stroke": 1, "line_height": 18, "facts": 2, "filler_lines": 1,
               "forms": ["{c}: {k}", "{k} in {c}"]}


def test_page_layout_sets_the_amount_of_text_and_its_weight():
    regular = make_corpus("documents", size=4, tasks=["doc_ocr"])[0]
    large = make_corpus("documents", size=4, tasks=["doc_ocr"], layout=LARGE_PRINT)[0]
    assert len(large.meta["lines"]) == 5 and len(large.meta["facts"]) == 2
    fact_lines = [line for line in large.meta["lines"] if any(c in line for c in COUNTRIES)]
    assert len(fact_lines) == 4 and all(": " in line or " in " in line for line in fact_lines)
    ink = [(np.asarray(r.images[0]) < 100).all(-1).mean() for r in (regular, large)]
    assert ink[1] > 2 * ink[0]  # bold, larger glyphs
    (x0, y0, x1, y1), = large.meta["target_boxes"]
    assert x1 - x0 > 30 and y1 - y0 >= 10  # the box still encloses one whole word


def test_page_layout_can_put_every_line_on_the_patch_grid():
    on_grid = {**LARGE_PRINT, "line_height": 14, "top": 12, "indent": [2, 2]}  # conf/page_layout/tiny.yaml
    for record in make_corpus("documents", size=8, tasks=["doc_ocr"], layout=on_grid):
        ink = (np.asarray(record.images[0]) < 100).all(-1)
        rows = np.flatnonzero(ink.any(1))
        # Patch rows 1-5 hold the five lines; descenders ("by the river") reach 1 px below.
        assert rows.min() >= 14 and rows.max() <= 14 * 6 + 1
        starts = [np.flatnonzero(ink[14 * r:14 * (r + 1)].any(0)).min() for r in range(1, 6)]
        assert max(starts) <= 4  # every line starts 2 px in (bold ink and side bearings: +-2 px)
        (x0, y0, x1, y1), = record.meta["target_boxes"]
        assert y0 // 14 == (y1 - 1) // 14  # the boxed word's ink lies within one patch row


def test_page_layout_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="too wide for a 112px page"):
        PageLayout(font_size=14)  # the default wordings are too long at 14 px
    with pytest.raises(ValueError, match="do not fit"):
        PageLayout(facts=6)
    with pytest.raises(ValueError, match="do not fit"):
        PageLayout(top=20)  # the default eight lines need 104 px below the first line's top
    with pytest.raises(ValueError, match="indent must be"):
        PageLayout(indent=(6, 3))
    with pytest.raises(ValueError, match="unknown keys"):
        make_corpus("documents", size=1, layout={"font": 12})
    with pytest.raises(ValueError, match="at most 2 targets"):
        make_corpus("documents", size=1, layout=LARGE_PRINT, corruption={"targets": 3})


def test_dense_captions_name_each_drawn_shape_at_its_place_left_to_right():
    from blocks.data.synthetic.captions import place_name

    assert place_name(Shape("circle", "red", 10, 10, 5), 112) == "top left"
    assert place_name(Shape("circle", "red", 56, 56, 5), 112) == "middle"
    assert place_name(Shape("circle", "red", 100, 60, 5), 112) == "middle right"
    assert place_name(Shape("circle", "red", 60, 100, 5), 112) == "bottom middle"
    records = list(make_corpus("captions", size=40, tasks=["dense_caption"]))
    assert {len(r.answer.split(" and ")) for r in records} == {1, 2, 3, 4}
    checked = 0
    for record in records:
        parts = [re.fullmatch(r"a (\w+) (\w+) at (.+)", p).groups() for p in record.answer.split(" and ")]
        colours = [colour for colour, _, _ in parts]
        for colour, _, place in parts:
            if colours.count(colour) > 1:
                continue  # pixels of one colour from two shapes: no single centre to check
            image = np.asarray(record.images[0]).astype(int)
            rows, cols = np.nonzero(np.abs(image - COLOURS[colour]).sum(-1) < 30)
            centre = Shape("circle", colour, cols.mean(), rows.mean(), 1)
            # The drawn centre of mass lies within a few px of the true centre; skip cell borders.
            if all(abs(v - b) > 4 for v in (centre.x, centre.y) for b in (112 / 3, 224 / 3)):
                assert place_name(centre, 112) == place, f"{record.id}: {colour} drawn at {centre.x:.0f},{centre.y:.0f}"
                checked += 1
    assert checked > 30
