"""The official-format reader (images, several images, videos, frame folders, text) and the
skip-counting dataset/collate/report around any record source."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from blocks.batch import Sample
from blocks.data.dataset import ProcessedDataset, Skip, SkippingCollate, SkipReport
from blocks.data.errors import SampleError
from blocks.data.formats import OfficialJsonDataset
from blocks.data.record import Record
from blocks.data.synthetic import VideoCorpus
from media_helpers import StandInProcessor, grey_level, write_video


def _user(content):
    return {"role": "user", "content": content}


def _assistant(content):
    return {"role": "assistant", "content": content}


def _write_jsonl(path, entries):
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in entries) + "\n")
    return path


@pytest.fixture
def media(tmp_path):
    for name, colour in (("red.png", (255, 0, 0)), ("green.png", (0, 255, 0)), ("blue.png", (0, 0, 255))):
        Image.new("RGB", (20, 10), colour).save(tmp_path / name)
    return tmp_path


def test_single_image_marker_is_prepended_like_the_official_code(media):
    path = _write_jsonl(media / "d.jsonl", [
        {"id": "a", "image": "red.png", "conversations": [_user("What colour?"), _assistant("Red.")]},
        {"id": 7, "image": "blue.png", "conversations": [_user("Look: <image> now"), _assistant("Blue.")]}])
    data = OfficialJsonDataset(path)
    assert len(data) == 2
    first, second = data[0], data[1]
    assert first.conversations[0]["content"] == "<image>\nWhat colour?"
    assert first.images[0].getpixel((0, 0)) == (255, 0, 0) and first.meta["where"] == "d.jsonl:1"
    assert second.id == "7" and second.conversations[0]["content"] == "Look: <image> now"
    assert second.images[0].getpixel((3, 3)) == (0, 0, 255)


def test_image_dict_tags_become_ordered_markers(media):
    entry = {"id": "m", "image": {"<image_00>": "red.png", "<image_01>": "green.png"},
             "conversations": [_user("<image_01> vs <image_00>?"), _assistant("Green first."),
                               _user("Plain text turn"), _assistant("ok")]}
    (media / "d.json").write_text(json.dumps([entry], indent=2))
    record = OfficialJsonDataset(media / "d.json")[0]
    # Official layout: the pieces around each tag are joined with "\n".
    assert record.conversations[0]["content"] == "\n<image>\n vs \n<image>\n?"
    assert record.conversations[2]["content"] == "Plain text turn"
    assert [im.getpixel((0, 0)) for im in record.images] == [(0, 255, 0), (255, 0, 0)]


def test_json_list_entries_know_their_line(media):
    entries = [{"id": str(k), "conversations": [_user(f"q{k}"), _assistant("a")]} for k in range(3)]
    text = "[\n" + ",\n\n".join(json.dumps(e, indent=1) for e in entries) + "\n]\n"
    (media / "d.json").write_text(text)
    data = OfficialJsonDataset(media / "d.json")
    starts = [n + 1 for n, line in enumerate(text.splitlines()) if line == "{"]
    assert [data.where(k) for k in range(3)] == [f"d.json:{n}" for n in starts]
    assert data[2].conversations[0]["content"] == "q2" and data[2].images == [] and data[2].videos == []


def test_video_file_and_frame_folder(media):
    write_video(media / "clip.mp4", n_frames=20, rate=10)  # 2 s
    folder = media / "frames"
    folder.mkdir()
    for k in range(6):
        Image.new("RGB", (8, 8), (10 * k,) * 3).save(folder / f"{k:03d}.png")
    path = _write_jsonl(media / "v.jsonl", [
        {"id": "v", "video": "clip.mp4", "fps": 2, "conversations": [_user("What?"), _assistant("Grey.")]},
        {"id": "f", "video": "frames", "frame_rate": 2, "max_packing": 2,
         "conversations": [_user("<video>\nWhat?"), _assistant("Grey.")]}])
    data = OfficialJsonDataset(path, max_groups=2)
    clip = data[0].videos[0]
    assert data[0].conversations[0]["content"] == "<video>\nWhat?"
    # 2 s at 2 fps = 4 frames > 2 groups -> packing 2: frames 2, 7, 12, 17 in groups of 2.
    assert clip.groups == [[2, 7], [12, 17]]
    assert [grey_level(f) for f in clip.frames] == pytest.approx([12, 42, 72, 102], abs=3)
    frames = data[1].videos[0]
    # 6 frames at 2 fps (3 s) > 2 groups: packing ceil(6/2) = 3 > max_packing 2 -> 4 frames in 2 groups.
    assert frames.groups == [[0, 10], [15, 25]]
    assert [f.getpixel((0, 0))[0] for f in frames.frames] == [0, 20, 30, 50]


def test_paths_may_not_leave_the_root(media, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x.png"
    Image.new("RGB", (4, 4)).save(outside)
    (media / "sub").mkdir()
    path = _write_jsonl(media / "sub" / "d.jsonl", [
        {"id": "up", "image": "../red.png", "conversations": [_user("q"), _assistant("a")]},
        {"id": "abs", "image": str(outside), "conversations": [_user("q"), _assistant("a")]},
        {"id": "ok", "image": str(media / "red.png"), "conversations": [_user("q"), _assistant("a")]},
        {"id": "text", "conversations": [_user("q"), _assistant("a")]}])  # a file of only bad entries is refused
    for index, sample_id in ((0, "up"), (1, "abs")):
        with pytest.raises(SampleError, match=rf"\[d.jsonl:{index + 1}\] sample '{sample_id}'.*leaves the dataset root"):
            OfficialJsonDataset(path)[index]
    assert OfficialJsonDataset(path, root=media)[2].images[0].size == (20, 10)  # absolute, inside the root


@pytest.mark.parametrize("entry, message", [
    ({"id": "x"}, "'conversations' must be a non-empty list"),
    ({"id": "x", "conversations": [_assistant("a")]}, "first turn must be the user's"),
    ({"id": "x", "conversations": [{"role": "bot", "content": "a"}]}, r"conversations\[0\] must be"),
    ({"id": "x", "conversations": [_user(3)]}, r"conversations\[0\] must be"),
    ({"id": ["x"], "conversations": [_user("q")]}, "'id' must be a string or integer"),
    ({"id": "x", "video": "v.mp4", "max_packing": 9, "conversations": [_user("q")]}, "max_packing must be"),
    ({"id": "x", "image": 5, "conversations": [_user("q")]}, "media path must be a non-empty string"),
])
def test_wrong_fields_name_file_line_and_id(media, entry, message):
    path = _write_jsonl(media / "bad.jsonl", [{"id": "fine", "conversations": [_user("q")]}, entry])
    with pytest.raises(SampleError, match=message) as info:
        OfficialJsonDataset(path)[1]
    assert info.value.where == "bad.jsonl:2"


def test_processed_dataset_counts_skips_through_collate_and_report(media, caplog):
    path = _write_jsonl(media / "d.jsonl", [
        {"id": "ok1", "image": "red.png", "conversations": [_user("q"), _assistant("a")]},
        "{not json",
        {"id": "gone", "image": "missing.png", "conversations": [_user("q"), _assistant("a")]},
        {"id": "ok2", "conversations": [_user("q"), _assistant("b")]}])
    dataset = ProcessedDataset(OfficialJsonDataset(path), StandInProcessor())
    with caplog.at_level(logging.WARNING):
        items = [dataset[k] for k in range(len(dataset))]
    assert [type(item).__name__ for item in items] == ["Sample", "Skip", "Skip", "Sample"]
    assert items[1] == Skip("d.jsonl:2", "malformed_json", items[1].message)
    assert items[2].sample_id == "gone" and items[2].reason == "missing_file"
    assert "missing.png" in caplog.text and "d.jsonl:3" in caplog.text
    batch = SkippingCollate(pad_id=0)(items)
    assert batch.batch_size == 2 and batch.sample_ids == ["ok1", "ok2"]
    assert batch.skipped == [("d.jsonl:2", "malformed_json"), ("gone", "missing_file")]
    report = SkipReport()
    report.update(batch)
    report.update(SkippingCollate(pad_id=0)([items[2]]))  # an all-skipped batch still counts
    assert (report.used, report.skipped, report.counts["missing_file"]) == (2, 3, 2)
    table = report.table()
    assert "5 seen, 2 used, 3 skipped (60.00 %)" in table
    assert table.splitlines()[2].split()[:2] == ["missing_file", "2"]
    with pytest.raises(SampleError, match="d.jsonl:2"):
        ProcessedDataset(OfficialJsonDataset(path), StandInProcessor(), strict=True)[1]


def test_unexpected_errors_are_counted_not_fatal():
    def broken(record):
        raise KeyError("bug")

    skip = ProcessedDataset([Record("r", [_user("q")])], broken)[0]
    assert skip == Skip("r", "unexpected KeyError", "KeyError: 'bug'")


def test_wraps_synthetic_corpus():
    corpus = VideoCorpus(size=2, seed=0)
    dataset = ProcessedDataset(corpus, StandInProcessor())
    sample = dataset[0]
    assert isinstance(sample, Sample) and sample.sample_id == corpus[0].id
    frames = sum(len(g) for g in corpus[0].videos[0].groups)
    assert sample.tgt_sizes.shape[0] == frames and int(sample.group_sizes.sum()) == frames


def test_report_merge_and_reset():
    a, b = SkipReport(max_examples=2), SkipReport()
    a.counts.update({"x": 1})
    a.examples["x"] = ["s1"]
    b.counts.update({"x": 2, "y": 1})
    b.examples.update({"x": ["s2", "s3"], "y": ["s4"]})
    b.used = 10
    a.merge(b)
    assert (a.used, a.counts, a.examples) == (10, {"x": 3, "y": 1}, {"x": ["s1", "s2"], "y": ["s4"]})
    a.reset()
    assert (a.used, a.skipped, a.table()) == (0, 0, "samples: 0 seen, 0 used, 0 skipped (0.00 %)")


def test_all_skipped_batch_is_empty_but_typed():
    batch = SkippingCollate(pad_id=0)([Skip("a", "r", "m")])
    assert batch.batch_size == 0 and batch.num_groups == 0 and batch.skipped == [("a", "r")]
    assert batch.patches.shape == (0, 588) and batch.input_ids.dtype == torch.long
    assert np.array_equal(batch.image_bound.shape, (0, 3))


def test_official_corpus_picks_the_file_by_split(tmp_path):
    from blocks.data.formats import official_corpus

    for name, answer in (("train.jsonl", "yes"), ("heldout.jsonl", "no")):
        line = {"id": name, "conversations": [{"role": "user", "content": "Is it?"},
                                              {"role": "assistant", "content": answer}]}
        (tmp_path / name).write_text(json.dumps(line) + "\n")
    train = official_corpus(tmp_path / "train.jsonl", tmp_path / "heldout.jsonl", split="train", size=5, seed=1)
    heldout = official_corpus(tmp_path / "train.jsonl", tmp_path / "heldout.jsonl", split="heldout", size=5)
    assert len(train) == 1 and train[0].conversations[1]["content"] == "yes"
    assert heldout[0].conversations[1]["content"] == "no"
    with pytest.raises(ValueError, match="heldout"):
        official_corpus(tmp_path / "train.jsonl", split="heldout")
