import random

import pytest

from blocks.data.record import Record
from blocks.data.synthetic.captions import CaptionCorpus
from blocks.data.synthetic.scenes import SceneCorpus
from blocks.data.synthetic.shapes import COLOURS, SHAPES
from blocks.rl.scene_claims import Place, SceneChecker, scene_checker, split_scene_claims

# 112 px: columns / rows split at 37.3 and 74.7
SCENE = SceneChecker([("circle", "red", 20, 20), ("square", "blue", 90, 60), ("square", "green", 56, 100)], 112)


def verdicts(text, checker=SCENE):
    return [(c.text, c.verdict) for c in checker(text).claims]


def test_dense_caption_claims_by_hand():
    assert verdicts("a red circle at top left and a blue square at middle right") == [
        ("there is a red circle", "accepted"), ("the red circle is at top left", "accepted"),
        ("there is a blue square", "accepted"), ("the blue square is at middle right", "accepted")]
    # wrong place: the object exists, its place is rejected; a missing object is one rejection
    assert verdicts("a red circle at bottom right and a yellow triangle at middle") == [
        ("there is a red circle", "accepted"), ("the red circle is at bottom right", "rejected"),
        ("there is a yellow triangle at middle", "rejected")]


def test_each_mention_needs_its_own_object():
    assert [v for _, v in verdicts("a red circle and a red circle")] == ["accepted", "rejected"]
    assert [v for _, v in verdicts("a square, a square and a shape")] == ["accepted"] * 3


def test_counts_statements_and_pronouns():
    assert verdicts("There are 3 shapes: one red circle, two blue squares.") == [
        ("3 shapes", "accepted"), ("one red circle", "accepted"), ("two blue squares", "rejected")]
    assert verdicts("The only circle is red.") == [("the only circle is red", "accepted")]
    assert verdicts("The only square is blue.") == [("the only square is blue", "rejected")]  # there are two
    assert verdicts("The only circle is in the left column and the top row, so it is at the right.") == [
        ("the only circle is in the left column", "accepted"), ("the top row", "accepted"),
        ("so it is at the right", "rejected")]


def test_coordinates_within_tolerance():
    assert [v for _, v in verdicts("I see a red circle at (25, 18); a blue square at (40, 60).")] == [
        "accepted", "accepted", "accepted", "rejected"]
    assert split_scene_claims("a red circle at (25, 18)")[0].place == Place(point=(25, 18))


def test_unreadable_clauses_are_unverifiable_not_rejected():
    report = SCENE("a red circle with a shiny star. The image is 112 px wide. a red at top. I see")
    assert [c.verdict for c in report.claims] == ["accepted", "unverifiable", "unverifiable", "unverifiable"]
    assert report.score == 0 and report.count("unverifiable") == 3


def test_the_corpora_own_captions_and_traces_are_accepted():
    for record in CaptionCorpus(200, seed=3):
        report = scene_checker(record)(record.answer)
        assert report.count("accepted") >= len(record.meta["shapes"]), record
        assert report.count("rejected") == report.count("unverifiable") == 0, record
    for record in SceneCorpus(150, seed=3, reasoning=True):
        assert scene_checker(record)(record.conversations[-1]["content"]).count("rejected") == 0, record


def test_one_wrong_word_in_a_dense_caption_is_exactly_one_rejection():
    rng = random.Random(0)
    swaps = [list(COLOURS), list(SHAPES), ["left", "right"], ["top", "bottom"]]
    for record in CaptionCorpus(300, seed=5, tasks=["dense_caption"]):
        words = record.answer.split(" ")
        i = rng.choice([i for i, w in enumerate(words) if any(w in pool for pool in swaps)])
        pool = next(pool for pool in swaps if words[i] in pool)
        words[i] = rng.choice([w for w in pool if w != words[i]])
        report = scene_checker(record)(" ".join(words))
        assert report.score == -1 and report.count("unverifiable") == 0, (record.answer, words)


def test_a_record_without_ground_truth_is_refused():
    record = Record(id="x", conversations=[{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="'x'"):
        scene_checker(record)
