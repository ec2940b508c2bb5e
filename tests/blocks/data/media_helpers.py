"""Helpers for the data tests: tiny videos written with PyAV, and a stand-in for the real processor
(``blocks.data.processor.Processor``) with the same call surface: ``processor(record) -> Sample``,
raising ``SampleError`` / ``SampleTooLong`` for bad samples."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from blocks.batch import IGNORE_INDEX, Sample
from blocks.data.errors import SampleError, SampleTooLong
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record

PLACEHOLDER_ID = 1
TOKENS_PER_GROUP = 4


def write_video(path: Path, n_frames: int, rate: int, size: int = 16, codec: str = "mpeg4",
                options: dict[str, str] | None = None) -> Path:
    """Write a ``size``x``size`` video whose frame k is uniformly grey with level 6*k (mod 256).
    ``options``: muxer options, e.g. ``{"movflags": "faststart"}`` (MP4 header before the frames)."""
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(n_frames):
            pixels = np.full((size, size, 3), (6 * k) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cut_before_packet(path: Path, keep: int, out: Path) -> Path:
    """Copy the first bytes of ``path`` up to the start of its video packet number ``keep``: a file cut
    mid-way that still holds its first ``keep`` frames whole."""
    with av.open(str(path)) as container:
        positions = [packet.pos for packet in container.demux(video=0) if packet.size]
    out.write_bytes(path.read_bytes()[:positions[keep]])
    return out


def trim_with_edit_list(path: Path, skip: int, out: Path) -> Path:
    """Remux ``path`` to MP4 with every timestamp ``skip`` frames earlier: the muxer writes an edit list
    that hides the first ``skip`` stored frames, as a lossless trim (``-ss ... -c copy``) does."""
    with av.open(str(path)) as source, av.open(str(out), "w") as target:
        stream = source.streams.video[0]
        copy = target.add_stream_from_template(stream)
        shift = round(skip / (stream.average_rate * stream.time_base))
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
            target.mux(packet)
    return out


def grey_level(image: Image.Image) -> int:
    return int(round(float(np.asarray(image).mean())))


def _patches(image: Image.Image) -> torch.Tensor:
    """A 28x28 resize as 4 patch rows [4, 588] in (c, y, x) order."""
    pixels = torch.from_numpy(np.array(image.convert("RGB").resize((28, 28)))).float().div(255)
    return pixels.permute(2, 0, 1).reshape(3, 2, 14, 2, 14).permute(1, 3, 0, 2, 4).reshape(4, 588)


class StandInProcessor:
    """Bytes of the text as token ids; each image / video group becomes 4 placeholder tokens."""

    def __init__(self, max_tokens: int = 10_000) -> None:
        self.max_tokens = max_tokens

    def __call__(self, record: Record) -> Sample:
        ids, labels, patches, sizes, temporal, group_sizes, bounds = [], [], [], [], [], [], []
        images, videos = iter(record.images), iter(record.videos)
        for turn in record.conversations:
            trained = turn["role"] == "assistant"
            for piece in _split_markers(turn["content"]):
                if piece in (IMAGE_MARKER, VIDEO_MARKER):
                    if piece == IMAGE_MARKER:
                        groups = [([next(images)], [-1])]
                    else:
                        clip = next(videos)
                        frames = iter(clip.frames)
                        groups = [([next(frames) for _ in group], group) for group in clip.groups]
                    for frames_of_group, ids_of_group in groups:
                        bounds.append((len(ids), len(ids) + TOKENS_PER_GROUP))
                        ids += [PLACEHOLDER_ID] * TOKENS_PER_GROUP
                        labels += [IGNORE_INDEX] * TOKENS_PER_GROUP
                        patches += [_patches(frame) for frame in frames_of_group]
                        sizes += [(2, 2)] * len(frames_of_group)
                        temporal += list(ids_of_group)
                        group_sizes.append(len(frames_of_group))
                else:
                    tokens = list(piece.encode())
                    ids += tokens
                    labels += tokens if trained else [IGNORE_INDEX] * len(tokens)
        if all(label == IGNORE_INDEX for label in labels):
            raise SampleError("no token carries loss", sample_id=record.id, reason="no_loss")
        if len(ids) > self.max_tokens:
            raise SampleTooLong(f"{len(ids)} tokens > {self.max_tokens}", sample_id=record.id)
        return Sample(
            input_ids=torch.tensor(ids), labels=torch.tensor(labels),
            patches=torch.cat(patches) if patches else torch.zeros(0, 588),
            tgt_sizes=torch.tensor(sizes, dtype=torch.long).view(-1, 2),
            temporal_ids=torch.tensor(temporal, dtype=torch.long),
            group_sizes=torch.tensor(group_sizes, dtype=torch.long),
            image_bound=torch.tensor(bounds, dtype=torch.long).view(-1, 2), sample_id=record.id)


def _split_markers(text: str) -> list[str]:
    pieces, rest = [], text
    while rest:
        positions = [(rest.find(m), m) for m in (IMAGE_MARKER, VIDEO_MARKER) if m in rest]
        if not positions:
            pieces.append(rest)
            break
        at, marker = min(positions)
        pieces += [rest[:at], marker] if at else [marker]
        rest = rest[at + len(marker):]
    return pieces
