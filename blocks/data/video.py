"""Video decoding, frame sampling and 3D-resampler grouping (the MiniCPM-V 4.5 model-card recipe).

The recipe (model card "Chat with Video", ``encode_video``), with the video's ``n`` frames at native
rate ``r`` (duration ``d = n / r``) and requested sampling rate ``fps``:

1. If ``fps * int(d) <= max_groups``: one frame per group, and
   ``round(min(fps, round(r)) * min(max_groups, d))`` frames are sampled.
   (The test truncates ``d`` but the count does not, so up to ``fps`` groups more than
   ``max_groups`` can come out, e.g. 183 groups for 60.9 s at 3 fps: kept for parity.)
2. Otherwise ``packing = ceil(d * fps / max_groups)`` frames per group; if that is at most
   ``max_packing``, ``round(d * fps)`` frames are sampled, else ``max_groups * max_packing`` frames
   with ``packing = max_packing``.
3. ``force_packing`` (optional) overrides the packing, capped at ``max_packing``.
4. Frames are picked at bin centres: ``int(i * gap + gap / 2)`` with ``gap = n / count``.
5. A frame's time is ``index / r``; it is snapped to the nearest point of the grid
   ``numpy.arange(0, d, time_scale)`` and its temporal id is ``int(grid_point / time_scale)``.
   The float division truncates some grid points one step down (4.3 s -> id 42, so 4.2 s and
   4.3 s share id 42): the official arithmetic, reproduced so ids match the model card bit for bit.
6. Groups are consecutive runs of ``packing`` frames; the last one may be shorter.

Deviations, all in cases where the official code crashes or duplicates frames: the count is
clamped to ``[1, n]`` (official: 0 frames for clips shorter than ``0.5 / fps`` s, a division by
zero; duplicated frames when ``fps`` exceeds the native rate in branch 2); a native rate below
0.5 fps is not rounded to 0 in step 1 (sparse frame folders); exact distance ties when
snapping go to the earlier grid point (the official cKDTree leaves ties unspecified).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image

from blocks.data.errors import MediaError
from blocks.data.record import VideoClip

MAX_PACKING_LIMIT = 6  # the resampler was trained with at most 6 frames per group
# Demuxers whose declared frame count is the number of frames stored (MP4/QuickTime sample tables): fewer
# decoded frames mean a cut file, a counted skip. Other declared counts (AVI headers) are often off in intact
# files, so a shortfall is logged and the decoded frames are used. Evidence: docs/data_formats.md.
TRUSTED_FRAME_COUNTS = ("mov,mp4,m4a,3gp,3g2,mj2",)
log = logging.getLogger(__name__)


def plan_frames(n_frames: int, native_fps: float, fps: float, max_groups: int = 180, max_packing: int = 3,
                force_packing: int | None = None) -> tuple[list[int], int]:
    """Choose which frames to keep and how many go in one resampler group (steps 1-4 above).

    Returns:
        (sorted frame indices into the ``n_frames`` frames, frames per group).
    """
    if not 1 <= max_packing <= MAX_PACKING_LIMIT:
        raise ValueError(f"max_packing must be in 1..{MAX_PACKING_LIMIT}, got {max_packing}")
    if n_frames < 1 or native_fps <= 0 or fps <= 0 or max_groups < 1:
        raise ValueError(f"need n_frames >= 1, native_fps > 0, fps > 0, max_groups >= 1; got "
                         f"{n_frames}, {native_fps}, {fps}, {max_groups}")
    duration = n_frames / native_fps
    if fps * int(duration) <= max_groups:
        packing = 1
        # `or native_fps`: slow sources (< 0.5 fps, e.g. sparse frame folders) would round to 0 frames.
        count = round(min(fps, round(native_fps) or native_fps) * min(max_groups, duration))
    else:
        packing = math.ceil(duration * fps / max_groups)
        if packing <= max_packing:
            count = round(duration * fps)
        else:
            count, packing = max_groups * max_packing, max_packing
    if force_packing:
        packing = min(force_packing, max_packing)
    count = min(max(count, 1), n_frames)
    gap = n_frames / count
    return [int(i * gap + gap / 2) for i in range(count)], packing


def temporal_ids(times: Sequence[float], duration: float, time_scale: float = 0.1) -> list[int]:
    """Snap frame times (seconds) to the ``time_scale`` grid over ``[0, duration)`` (step 5 above)."""
    grid = np.arange(0, duration, time_scale)
    if len(grid) == 0:  # duration 0: every frame sits on the first grid point
        grid = np.zeros(1)
    times = np.asarray(times, dtype=np.float64)
    upper = np.clip(np.searchsorted(grid, times), 0, len(grid) - 1)
    lower = np.clip(upper - 1, 0, len(grid) - 1)
    nearest = np.where(np.abs(times - grid[lower]) <= np.abs(grid[upper] - times), lower, upper)
    return (grid[nearest] / time_scale).astype(np.int32).tolist()


def _group(frames: list[Image.Image], ids: list[int], packing: int, source: str) -> VideoClip:
    groups = [ids[i:i + packing] for i in range(0, len(ids), packing)]
    return VideoClip(frames=frames, groups=groups, source=source)


def read_video(path: str | os.PathLike, fps: float, max_groups: int = 180, max_packing: int = 3,
               time_scale: float = 0.1, force_packing: int | None = None, where: str = "") -> VideoClip:
    """Decode a video file with PyAV and sample/group its frames by the model-card recipe.

    Args:
        path: a video file any FFmpeg build can demux (mp4, mkv, webm, avi, ...).
        fps: sampling rate (frames per second) before packing; capped by the native rate.
        max_groups: most resampler groups (LLM placeholders of 64 tokens) per video.
        max_packing: most frames per group (1..6).
        time_scale: temporal-id unit in seconds.
        force_packing: frames per group regardless of duration (capped at ``max_packing``).
        where: where the video is referenced (e.g. ``"train.jsonl:17"``), included in errors.

    Returns:
        A ``VideoClip`` of RGB frames and their temporal-id groups.

    Raises:
        MediaError: missing, empty, unreadable file, no video stream, no decodable frame, or fewer frames
            than an MP4/QuickTime container declares (``truncated_video``: the file is cut).
    """
    name = str(path)
    probe = probe_video(path, where)
    n_frames = probe.frames
    for _ in range(2):
        indices, packing = plan_frames(n_frames, probe.rate, fps, max_groups, max_packing, force_packing)
        frames, decoded = _decode(name, indices, where)
        if len(frames) == len(indices):
            break
        if decoded == 0:
            raise MediaError(f"{name}: no decodable video frame", where=where, reason="empty_video")
        short = (f"{name}: the {probe.container} container declares {n_frames} frames but {decoded} decode"
                 if probe.declared else f"{name}: {n_frames} packets counted but {decoded} frames decode")
        if probe.trusted:
            raise MediaError(f"{short}: the file is cut or damaged", where=where, reason="truncated_video")
        log.warning("%s; sampling the %d frames that decode (this container's count is unreliable: "
                    "docs/data_formats.md)", short, decoded)
        n_frames = decoded
    else:
        raise MediaError(f"{name}: frame count changed between decodes", where=where, reason="corrupt_video")
    times = [index / probe.rate for index in indices]
    return _group(frames, temporal_ids(times, n_frames / probe.rate, time_scale), packing, name)


@dataclass(frozen=True)
class VideoProbe:
    """What a video's header says. ``frames``: the count to plan with (the declared one, else the packets
    counted); ``declared``: frames the container says it presents (0 if it says nothing); ``trusted``:
    whether decoding fewer than ``declared`` means a cut or damaged file (``TRUSTED_FRAME_COUNTS``)."""

    frames: int
    rate: float
    declared: int
    trusted: bool
    container: str


def probe_video(path: str | os.PathLike, where: str = "") -> VideoProbe:
    """Frame count and average frame rate of the first video stream, without decoding.

    The count comes from the container header (capped by its duration: an MP4 edit list presents fewer
    frames than the file stores), or from counting packets when the header has none.

    Raises:
        MediaError: missing or empty file, not a video, no frames, unknown frame rate.
    """
    name, file = str(path), Path(path)
    if not file.is_file():
        raise MediaError(f"{name}: file not found", where=where, reason="missing_file")
    if file.stat().st_size == 0:
        raise MediaError(f"{name}: empty file (0 bytes)", where=where, reason="empty_file")
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise MediaError(f"{name}: no video stream", where=where, reason="no_video_stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate or rate <= 0:
                raise MediaError(f"{name}: unknown frame rate", where=where, reason="corrupt_video")
            declared = stream.frames
            if declared and stream.duration:
                declared = min(declared, round(float(stream.duration * stream.time_base * rate)))
            n_frames = declared or sum(1 for packet in container.demux(stream) if packet.size)
            kind = container.format.name
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"{name}: cannot open video ({type(error).__name__}: {error})", where=where,
                         reason="corrupt_video") from error
    if n_frames == 0:
        raise MediaError(f"{name}: video has no frames", where=where, reason="empty_video")
    return VideoProbe(n_frames, float(rate), declared, bool(declared) and kind in TRUSTED_FRAME_COUNTS, kind)


def _decode(name: str, indices: list[int], where: str) -> tuple[list[Image.Image], int]:
    """Decode the frames at ``indices`` (sorted); also return how many frames were decoded."""
    wanted = set(indices)
    frames: list[Image.Image] = []
    decoded = 0
    try:
        with av.open(name) as container:
            for frame in container.decode(video=0):
                if decoded in wanted:
                    frames.append(frame.to_image().convert("RGB"))
                decoded += 1
                if decoded > indices[-1]:
                    break
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"{name}: cannot decode video ({type(error).__name__}: {error})", where=where,
                         reason="corrupt_video") from error
    # An index listed twice would need the frame twice; plan_frames never repeats one.
    return frames, decoded


def clip_from_frames(frames: Sequence[Image.Image], *, native_fps: float | None = None,
                     timestamps: Sequence[float] | None = None, fps: float | None = None, max_groups: int = 180,
                     max_packing: int = 3, time_scale: float = 0.1, force_packing: int | None = None,
                     source: str = "") -> VideoClip:
    """Sample and group in-memory frames (e.g. a folder of extracted frames) like ``read_video``.

    Args:
        frames: the frames in time order.
        native_fps: the rate the frames were taken at; or give ``timestamps`` instead.
        timestamps: each frame's time in seconds (non-decreasing); its mean rate stands in for
            ``native_fps`` in the sampling plan, and the timestamps themselves give the temporal ids.
        fps: sampling rate; ``None`` = the native rate (keep every frame that fits).
        max_groups, max_packing, time_scale, force_packing, source: as in ``read_video``.

    Raises:
        MediaError: no frames, or timestamps that do not match the frames.
    """
    if not frames:
        raise MediaError(f"{source or 'video'}: no frames", reason="empty_video")
    if (native_fps is None) == (timestamps is None):
        raise ValueError("give exactly one of native_fps and timestamps")
    n = len(frames)
    if timestamps is not None:
        times = np.asarray(timestamps, dtype=np.float64)
        if len(times) != n or (times < 0).any() or (np.diff(times) < 0).any():
            raise MediaError(f"{source or 'video'}: need {n} non-negative, non-decreasing timestamps, got "
                             f"{list(timestamps)[:8]}", reason="bad_timestamps")
        span = float(times[-1] - times[0])
        native_fps = (n - 1) / span if n > 1 and span > 0 else 1.0
        duration = float(times[-1]) + 1.0 / native_fps
    else:
        times = np.arange(n) / native_fps
        duration = n / native_fps
    indices, packing = plan_frames(n, native_fps, fps or native_fps, max_groups, max_packing, force_packing)
    ids = temporal_ids(times[indices], duration, time_scale)
    return _group([frames[i].convert("RGB") for i in indices], ids, packing, source)
