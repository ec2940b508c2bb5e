"""Video sampling/grouping: the model-card arithmetic, PyAV decoding of real files, in-memory frames."""

from __future__ import annotations

import logging
import math

import av
import numpy as np
import pytest
from PIL import Image

from blocks.data import video
from blocks.data.errors import MediaError
from blocks.data.video import clip_from_frames, plan_frames, read_video, temporal_ids
from media_helpers import cut_before_packet, grey_level, trim_with_edit_list, write_video


def _model_card_plan(n, native_fps, fps, max_groups=180, max_packing=3):
    """The model card's encode_video arithmetic, restated independently for the comparison."""
    duration = n / native_fps
    if fps * int(duration) <= max_groups:
        packing, count = 1, round(min(fps, round(native_fps)) * min(max_groups, duration))
    else:
        packing = math.ceil(duration * fps / max_groups)
        count = round(duration * fps) if packing <= max_packing else max_groups * max_packing
        packing = min(packing, max_packing)
    gap = n / count
    return [int(i * gap + gap / 2) for i in range(count)], packing


@pytest.mark.parametrize("n, native, fps", [(300, 30, 5), (1830, 30, 3), (30 * 400, 30, 1), (30 * 200, 30, 3),
                                            (25 * 3600, 25, 5), (24 * 90, 24, 10), (59, 29.97, 2)])
def test_plan_matches_model_card(n, native, fps):
    assert plan_frames(n, native, fps) == _model_card_plan(n, native, fps)


def test_plan_regimes_in_numbers():
    # 10 s at 30 fps sampled at 5 fps: 50 frames, one per group.
    indices, packing = plan_frames(300, 30, 5)
    assert (len(indices), packing, indices[:3]) == (50, 1, [3, 9, 15])
    # 200 s at 3 fps = 600 frames > 180 groups: packing ceil(600/180) = 4 > 3, so 540 frames in 180 groups of 3.
    indices, packing = plan_frames(30 * 200, 30, 3)
    assert (len(indices), packing) == (540, 3)
    # 100 s at 3 fps = 300 frames: packing 2, all 300 frames kept -> 150 groups.
    indices, packing = plan_frames(30 * 100, 30, 3)
    assert (len(indices), packing) == (300, 2)
    # force_packing regroups without changing the frames; capped at max_packing.
    assert plan_frames(300, 30, 5, force_packing=6, max_packing=4) == (plan_frames(300, 30, 5)[0], 4)


def test_plan_clamps_where_model_card_breaks():
    assert plan_frames(2, 30, 3) == ([1], 1)  # 0.07 s: the model card samples 0 frames and divides by 0
    indices, _ = plan_frames(10, 2, 5, max_groups=10)  # asks 25 of 10 frames: never duplicate one
    assert len(indices) == len(set(indices)) == 10
    with pytest.raises(ValueError, match="max_packing"):
        plan_frames(10, 2, 5, max_packing=7)


def test_temporal_ids_snap_to_grid_with_official_truncation():
    assert temporal_ids([0.0, 0.26, 1.04, 2.5], duration=3.0) == [0, 3, 10, 25]
    # 4.3 s lies on the grid, but float(arange(0, 5, 0.1)[43]) / 0.1 = 42.99999... -> 42, as in the model card.
    assert temporal_ids([4.2, 4.3], duration=5.0) == [42, 42]
    assert temporal_ids([9.99], duration=10.0) == [99]  # snapped to the last grid point below the duration


def test_read_video_one_frame_per_group(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n_frames=30, rate=10)  # 3 s
    clip = read_video(path, fps=2)
    # 3 s at 2 fps = 6 frames at bin centres of gap 5: frames 2, 7, ..., 27 -> times 0.2 .. 2.7 s.
    assert clip.groups == [[2], [7], [12], [17], [22], [27]]
    assert [grey_level(frame) for frame in clip.frames] == pytest.approx([12, 42, 72, 102, 132, 162], abs=3)
    assert all(frame.mode == "RGB" and frame.size == (16, 16) for frame in clip.frames)
    assert clip.source == str(path)


def test_read_video_packs_when_over_max_groups(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n_frames=40, rate=10)  # 4 s
    clip = read_video(path, fps=5, max_groups=4, max_packing=3)
    # 4 s * 5 fps = 20 frames > 4 groups; packing ceil(20/4) = 5 > 3 -> 4*3 = 12 frames in 4 groups of 3.
    assert [len(g) for g in clip.groups] == [3, 3, 3, 3]
    assert len(clip.frames) == 12
    flat = [t for g in clip.groups for t in g]
    assert flat == sorted(flat) and flat[0] == 1 and flat[-1] == 38
    assert np.diff([grey_level(f) for f in clip.frames]).min() > 0  # frames in time order


def test_read_video_mkv_without_frame_count(tmp_path):
    mkv = write_video(tmp_path / "clip.mkv", n_frames=12, rate=4)
    with av.open(str(mkv)) as container:
        assert container.streams.video[0].frames == 0  # no count in the header: packets are counted
    clip = read_video(mkv, fps=4)
    reference = read_video(write_video(tmp_path / "clip.mp4", n_frames=12, rate=4), fps=4)
    assert len(clip.frames) == 12 and clip.groups == reference.groups
    assert [grey_level(f) for f in clip.frames] == [grey_level(f) for f in reference.frames]


def test_clip_from_frames_with_rate_and_timestamps():
    frames = [Image.new("RGB", (8, 8), (k, k, k)) for k in range(10)]
    clip = clip_from_frames(frames, native_fps=2, max_groups=3, max_packing=2)
    # 5 s at 2 fps = 10 frames > 3 groups: packing ceil(10/3) = 4 > 2 -> 6 frames in 3 groups of 2.
    assert [len(g) for g in clip.groups] == [2, 2, 2]
    assert [f.getpixel((0, 0))[0] for f in clip.frames] == [0, 2, 4, 5, 7, 9]
    assert clip.groups == [[0, 10], [20, 25], [35, 45]]  # times = index / 2 s
    timed = clip_from_frames(frames[:3], timestamps=[1.0, 1.5, 2.0])
    assert timed.groups == [[10], [15], [20]]
    with pytest.raises(ValueError, match="exactly one"):
        clip_from_frames(frames, native_fps=2, timestamps=[0.0] * 10)


def test_mp4_cut_mid_file_is_a_skip_naming_declared_and_decoded_counts(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", n_frames=60, rate=10, options={"movflags": "faststart"})
    cut = cut_before_packet(whole, keep=40, out=tmp_path / "cut.mp4")
    assert video.probe_video(cut).declared == 60  # the header still declares every frame
    with pytest.raises(MediaError, match=r"cut.mp4: the mov,mp4.* container declares 60 frames but 40 decode: "
                                         r"the file is cut") as info:
        read_video(cut, fps=10, where="v.jsonl:3")
    assert info.value.reason == "truncated_video" and info.value.where == "v.jsonl:3"


def test_avi_counts_are_unreliable_so_a_shortfall_is_logged_and_the_decoded_frames_used(tmp_path, caplog):
    whole = write_video(tmp_path / "whole.avi", n_frames=60, rate=10)
    cut = cut_before_packet(whole, keep=40, out=tmp_path / "cut.avi")
    declared = video.probe_video(cut).frames
    with caplog.at_level(logging.WARNING, logger="blocks.data.video"):
        clip = read_video(cut, fps=10)
    assert declared > 40 and len(clip.frames) == 40
    assert f"cut.avi: the avi container declares {declared} frames but 40 decode" in caplog.text
    assert [grey_level(f) for f in clip.frames] == pytest.approx([6 * k for k in range(40)], abs=3)


def test_mp4_edit_list_hides_frames_without_being_taken_for_a_cut(tmp_path):
    trimmed = trim_with_edit_list(write_video(tmp_path / "src.mkv", n_frames=30, rate=10), skip=5,
                                  out=tmp_path / "trimmed.mp4")
    with av.open(str(trimmed)) as container:
        assert container.streams.video[0].frames == 30  # samples stored, 5 of them before the edit
    probe = video.probe_video(trimmed)
    assert (probe.frames, probe.declared, probe.trusted) == (25, 25, True)
    clip = read_video(trimmed, fps=10)
    assert len(clip.frames) == 25 and grey_level(clip.frames[0]) == pytest.approx(30, abs=3)  # frame 5 comes first
