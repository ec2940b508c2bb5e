"""Generation-based evaluation on a random tiny checkpoint: rows, table, resume, rescoring, a reference file."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from assemblies.chat import Chat
from assemblies.evaluation import HeldoutSet, ReferenceFile, evaluate, read_predictions, score_file
from assemblies.evaluation.scoring import ROW_FIELDS, score_row

LIMITS = {"short": 3, "long": 6}


@pytest.fixture(scope="module")
def chat(tiny_chat_checkpoint) -> Chat:
    return Chat.from_checkpoint(tiny_chat_checkpoint)


@pytest.fixture(scope="module")
def scenes() -> HeldoutSet:
    return HeldoutSet(["scenes"], per_task=2)  # 3 tasks x 2


def without_time(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_rows_and_table_cover_every_sample_and_mode(chat, scenes, tmp_path):
    path = tmp_path / "preds.jsonl"
    result = evaluate(chat, scenes, batch_size=4, max_new_tokens=LIMITS, predictions=path)
    assert len(result.rows) == result.generated == 12 and read_predictions(path) == result.rows
    assert all(list(row) == list(ROW_FIELDS) for row in result.rows)
    assert {(r["id"], r["mode"]) for r in result.rows} == {(scenes[i].id, m) for i in range(6) for m in LIMITS}
    long_rows = [r for r in result.rows if r["mode"] == "long"]
    assert all(r["generated_tokens"] <= 6 and (r["finish_reason"] == "length") == (r["generated_tokens"] == 6)
               for r in long_rows)
    assert [(s.mode, s.task) for s in result.scores] == [(m, t) for m in ("short", "long")
                                                         for t in ("scene_colour", "scene_count", "scene_position")]
    for score in result.scores:
        group = [r for r in result.rows if (r["mode"], r["task"]) == (score.mode, score.task)]
        assert score.samples == score.scored == 2 and score.chance == scenes.chance[score.task]
        assert score.accuracy == sum(r["correct"] for r in group) / 2
        assert score.stderr == pytest.approx(math.sqrt(score.accuracy * (1 - score.accuracy) / 2))
        assert score.mean_generated_tokens == sum(r["generated_tokens"] for r in group) / 2
        assert score.truncation_rate == sum(r["finish_reason"] == "length" for r in group) / 2
        assert score.format_failure_rate == sum(not r["well_formed"] for r in group) / 2
    # Each row is scored from its own generated text by its prompt's mode.
    assert all({k: r[k] for k in ("reasoning", "answer", "extracted", "well_formed", "correct")} ==
               score_row(r["text"], r["mode"], r["reference"]) for r in result.rows)


def test_resume_generates_only_what_is_missing_and_ends_as_one_run(chat, scenes, tmp_path):
    whole = evaluate(chat, scenes, batch_size=4, max_new_tokens=LIMITS, predictions=tmp_path / "whole.jsonl")
    path = tmp_path / "cut.jsonl"
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:20])  # five rows, then a write cut short
    with pytest.raises(FileExistsError, match="resume"):
        evaluate(chat, scenes, predictions=path)
    resumed = evaluate(chat, scenes, batch_size=4, max_new_tokens=LIMITS, predictions=path, resume=True)
    assert resumed.generated == 7
    key = lambda row: (row["id"], row["mode"])  # noqa: E731
    assert sorted(without_time(read_predictions(path)), key=key) == sorted(without_time(whole.rows), key=key)
    assert [s.accuracy for s in resumed.scores] == [s.accuracy for s in whole.scores]


def test_scoring_a_file_again_gives_the_same_table_and_applies_todays_rules(chat, scenes, tmp_path):
    path = tmp_path / "preds.jsonl"
    result = evaluate(chat, scenes, modes=["short"], batch_size=6, max_new_tokens=LIMITS, predictions=path)
    rows, scores = score_file(path)
    assert scores == result.scores and rows == result.rows
    # Rescoring derives every field from the generated text: an edited text is scored anew.
    edited = [{**row, "text": row["reference"], "correct": False} for row in rows]
    path.write_text("".join(json.dumps(row) + "\n" for row in edited))
    rows, scores = score_file(path)
    assert all(r["correct"] and r["answer"] == r["reference"] for r in rows)
    assert all(s.accuracy == 1.0 for s in scores)


def test_a_reference_file_uses_its_answers_and_verifiers_and_skips_bad_entries(chat, tmp_path):
    Image.new("RGB", (112, 112), (200, 30, 30)).save(tmp_path / "red.png")
    entries = [
        {"id": "a", "image": "red.png", "answer": "red", "task": "colour",
         "conversations": [{"role": "user", "content": "<image>\nWhat colour?"}]},
        {"id": "b", "image": "red.png", "verifier": "numeric",
         "conversations": [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "1"}]},
        {"id": "c", "image": "missing.png", "conversations": [{"role": "user", "content": "?"}]},
    ]
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    result = evaluate(chat, ReferenceFile(data), modes=["short"], max_new_tokens=2)
    rows = {row["id"]: row for row in result.rows}
    assert sorted(rows) == ["a", "b"] and sum(result.skipped.values()) == 1
    assert (rows["a"]["task"], rows["a"]["reference"], rows["a"]["verifier"]) == ("colour", "red", "auto")
    assert (rows["b"]["task"], rows["b"]["reference"], rows["b"]["verifier"]) == ("mine", "1", "numeric")
    assert rows["b"]["prompt"] == "<image>\nHow many?" and rows["a"]["chance"] is None


def test_duplicate_ids_are_refused(chat, scenes):
    with pytest.raises(ValueError, match="id"):
        evaluate(chat, [scenes[0], scenes[0]], modes=["short"], max_new_tokens=1)
