"""Official chat messages -> Record: items, frames with temporal ids, paths, bad input."""

from __future__ import annotations

import pytest
from PIL import Image

from blocks.data.messages import record_from_messages
from blocks.data.record import VideoClip
from blocks.data.video import read_video
from media_helpers import write_video


def img(value: int = 0) -> Image.Image:
    return Image.new("RGB", (32, 24), (value, 0, 0))


def test_items_are_joined_by_newlines_with_markers():
    clip = VideoClip(frames=[img(), img()], groups=[[0, 5]])
    record = record_from_messages([
        {"role": "user", "content": [img(1), "What is this?"]},
        {"role": "assistant", "content": "A box.", "reasoning_content": "red"},
        {"role": "user", "content": [clip, "And this?"]}], system_prompt="Be brief.", sample_id="c1")
    assert [t["content"] for t in record.conversations] == ["Be brief.", "<image>\nWhat is this?", "A box.",
                                                            "<video>\nAnd this?"]
    assert record.conversations[2]["reasoning_content"] == "red"
    assert len(record.images) == 1 and record.videos == [clip] and record.id == "c1"


def test_frames_with_temporal_ids_become_one_video():
    record = record_from_messages([{"role": "user", "content": [img(i) for i in range(4)] + ["Describe."]}],
                                  temporal_ids=[[0, 1], [2, 3]])
    assert record.conversations[0]["content"] == "<video>\nDescribe."
    assert record.images == [] and record.videos[0].groups == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="consecutive"):
        record_from_messages([{"role": "user", "content": [img(), "x", img()]}], temporal_ids=[[0, 1]])
    with pytest.raises(ValueError, match="4 frames but groups list 3"):
        record_from_messages([{"role": "user", "content": [img()] * 4}], temporal_ids=[[0, 1], [2]])


def test_paths_load_images_and_videos(tmp_path):
    img(7).save(tmp_path / "a.png")
    loaded = []

    def load_video(path):
        loaded.append(path.name)
        return VideoClip(frames=[img()], groups=[[0]])

    record = record_from_messages([{"role": "user", "content": [tmp_path / "a.png", tmp_path / "b.mp4", "Q"]}],
                                  load_video=load_video)
    assert record.conversations[0]["content"] == "<image>\n<video>\nQ"
    assert record.images[0].getpixel((0, 0)) == (7, 0, 0) and loaded == ["b.mp4"]
    with pytest.raises(ValueError, match="no video loader"):
        record_from_messages([{"role": "user", "content": [tmp_path / "b.mp4"]}])


def test_a_video_file_is_sampled_by_the_data_block_rule(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n_frames=20, rate=10)
    record = record_from_messages([{"role": "user", "content": [path, "What happens?"]}],
                                  load_video=lambda p: read_video(p, fps=5))
    assert record.conversations[0]["content"] == "<video>\nWhat happens?"
    expected = read_video(path, fps=5)
    assert record.videos[0].groups == expected.groups and len(record.videos[0].frames) == 10


@pytest.mark.parametrize("messages, match", [
    ([], "empty conversation"),
    ([{"role": "assistant", "content": "hi"}], "first message must be the user's"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system_prompt"),
    ([{"role": "user", "content": [3]}], "got int"),
])
def test_bad_messages_name_the_problem(messages, match):
    with pytest.raises(ValueError, match=match):
        record_from_messages(messages)
