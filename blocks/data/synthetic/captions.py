"""Image -> short caption pairs for the resampler warm-up stage.

One or two shapes; with two, the left one is named first: "a red circle and a blue square".
Chance (best blind caption, e.g. "a red circle"): P(one object) / (6 colours x 3 kinds) = 1/36.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from blocks.data.record import Record
from blocks.data.synthetic.base import SyntheticCorpus
from blocks.data.synthetic.shapes import COLOURS, SHAPES, Shape, canvas, draw_shapes, place

QUESTIONS = ("Describe the image.", "Write a short caption.", "What is in the picture?")


def caption_of(shapes: list[Shape]) -> str:
    """Name the shapes from left to right: ``"a red circle and a blue square"``."""
    return " and ".join(f"a {s.label}" for s in sorted(shapes, key=lambda s: s.x))


class CaptionCorpus(SyntheticCorpus):
    """Task ``caption``; the answer is the full caption.

    Two objects sit in opposite halves, so "left one first" is never ambiguous.
    """

    name = "captions"
    TASKS = {"caption": 1 / (2 * len(COLOURS) * len(SHAPES))}

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 image_size: int = 112) -> None:
        super().__init__(size, seed, split, tasks)
        self.image_size = image_size

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        s = self.image_size
        n = rng.randint(1, 2)
        halves = [(0.0, s)] if n == 1 else [(0.0, s / 2), (s / 2, s)]
        shapes: list[Shape] = []
        for x0, x1 in halves:
            r = rng.uniform(s * 0.1, s * 0.16)
            x, y = place(rng, shapes, r, (x0 + r + 1, r + 1, x1 - r - 1, s - r - 1))
            shapes.append(Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), x, y, r))
        image = draw_shapes(canvas(s), shapes)
        answer = caption_of(shapes)
        return self._image_record(record_id, task, image, rng.choice(QUESTIONS), answer)
