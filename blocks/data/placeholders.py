"""The text that stands for an image or a video group in the LLM prompt.

Each feature group of visual tokens (an image slice, or a group of up to 6 video frames) is written as
a run of ``<unk>`` between a start and an end marker; the model later overwrites the embeddings of the
``<unk>`` run with the resampler output. For an image (MiniCPM-V 4.x "new schema"):

    [<image_id>k</image_id>]<image><unk>*n</image><slice><unk>*n</slice><slice>...</slice>\\n<slice>...

one ``<slice>`` span per grid cell, the cells of a grid row side by side and the rows joined by
``\\n``. A video is one ``<image>`` span per frame group, the groups joined by ``\\n`` (frames after
the first of a group get no text: their features are fused into the group's tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from blocks.data.slicing import Size

QUERY_TOKENS = 64


@dataclass(frozen=True)
class MarkerTokens:
    """The marker strings of the official tokenizer (all single special tokens)."""

    im_start: str = "<image>"
    im_end: str = "</image>"
    slice_start: str = "<slice>"
    slice_end: str = "</slice>"
    unk: str = "<unk>"
    im_id_start: str = "<image_id>"
    im_id_end: str = "</image_id>"

    @property
    def span_starts(self) -> tuple[str, str]:
        return self.im_start, self.slice_start

    @property
    def span_ends(self) -> tuple[str, str]:
        return self.im_end, self.slice_end


MARKERS = MarkerTokens()
TokensPerGroup = Callable[[list[Size]], int]


@dataclass(frozen=True)
class constant_tokens:  # noqa: N801 - used like a function; a class so processors pickle into spawned workers
    """A ``tokens_per_group`` callable for resamplers with a fixed query count (64 for MiniCPM-V)."""

    n: int = QUERY_TOKENS

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"tokens per group must be >= 1, got {self.n}")

    def __call__(self, frame_sizes: list[Size]) -> int:
        return self.n


def image_placeholder(slice_tokens: Sequence[int], grid: Size | None, image_id: int | None = None,
                      markers: MarkerTokens = MARKERS) -> str:
    """Placeholder text of one image.

    Args:
        slice_tokens: number of visual tokens of the source slice, then of each cell row by row
            (``1 + cols*rows`` entries).
        grid: (cols, rows) of the cells, or None when the image is not sliced.
        image_id: written as ``<image_id>k</image_id>`` in front when given.
    """
    expected = 1 + (grid[0] * grid[1] if grid else 0)
    if len(slice_tokens) != expected:
        raise ValueError(f"{len(slice_tokens)} slice token counts for a grid {grid} with {expected} slices")
    m = markers
    text = f"{m.im_id_start}{image_id}{m.im_id_end}" if image_id is not None else ""
    text += m.im_start + m.unk * slice_tokens[0] + m.im_end
    if grid:
        cols, rows = grid
        cells = [m.slice_start + m.unk * n + m.slice_end for n in slice_tokens[1:]]
        text += "\n".join("".join(cells[r * cols:(r + 1) * cols]) for r in range(rows))
    return text


def video_placeholder(group_tokens: Sequence[int], markers: MarkerTokens = MARKERS,
                      image_ids: Sequence[int] | None = None) -> str:
    """Placeholder text of a video: one ``<image>`` span per frame group, joined by ``\\n``.

    ``image_ids``: one per group, written as ``<image_id>k</image_id>`` before its ``<image>``.
    """
    if not group_tokens:
        raise ValueError("a video needs at least one frame group")
    if image_ids is not None and len(image_ids) != len(group_tokens):
        raise ValueError(f"{len(image_ids)} image ids for {len(group_tokens)} frame groups")
    ids = [f"{markers.im_id_start}{k}{markers.im_id_end}" for k in image_ids] if image_ids is not None else \
        [""] * len(group_tokens)
    return "\n".join(k + markers.im_start + markers.unk * n + markers.im_end for k, n in zip(ids, group_tokens))
