"""The in-memory form of one training/eval example, before tokenization.

Every source (official JSONL files, synthetic corpora, the shipped digits set) yields ``Record``s;
the processor turns a ``Record`` into a ``blocks.batch.Sample``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

IMAGE_MARKER = "<image>"
VIDEO_MARKER = "<video>"


@dataclass
class VideoClip:
    """Sampled video frames grouped for the 3D resampler.

    ``groups`` holds the temporal ids (timestamps in ``time_scale`` seconds, 0.1 s in the official
    recipe) of the frames of each group, e.g. ``[[0, 5, 10], [15, 20, 25]]``; the frames are listed
    in the same order, so ``len(frames) == sum(len(g) for g in groups)``.
    """

    frames: list[Image.Image]
    groups: list[list[int]]
    source: str = ""

    def __post_init__(self) -> None:
        n = sum(len(g) for g in self.groups)
        if n != len(self.frames):
            raise ValueError(f"video {self.source!r}: {len(self.frames)} frames but groups list {n} temporal ids")
        if not self.frames:
            raise ValueError(f"video {self.source!r} has no frames")


@dataclass
class Record:
    """One conversation with its media.

    ``conversations`` is a list of ``{"role": "system"|"user"|"assistant", "content": str}``; each
    ``<image>`` / ``<video>`` marker in a content string stands for the next item of ``images`` /
    ``videos``. ``task`` names the task family for per-task metrics; ``answer`` is the short
    reference answer when the task has one (used by held-out accuracy).
    """

    id: str
    conversations: list[dict[str, str]]
    images: list[Image.Image] = field(default_factory=list)
    videos: list[VideoClip] = field(default_factory=list)
    task: str = ""
    answer: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        text = "".join(turn.get("content", "") for turn in self.conversations)
        n_img, n_vid = text.count(IMAGE_MARKER), text.count(VIDEO_MARKER)
        if n_img != len(self.images) or n_vid != len(self.videos):
            raise ValueError(f"record {self.id!r}: {n_img} {IMAGE_MARKER} markers for {len(self.images)} images, "
                             f"{n_vid} {VIDEO_MARKER} markers for {len(self.videos)} videos")
