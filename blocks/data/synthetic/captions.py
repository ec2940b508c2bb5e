"""Image -> caption pairs: short captions for the resampler warm-up, dense ones for contrastive pre-training.

Tasks (chance = best blind caption):
- ``caption``: one or two shapes; with two, the left one is named first: "a red circle and a blue
  square". Chance: P(one object) / (6 colours x 3 kinds) = 1/36.
- ``dense_caption``: one to four shapes anywhere, each with its place on a 3 x 3 grid, left to
  right: "a red circle at top left and a blue square at middle right". Chance: below
  P(one object) / (6 colours x 3 kinds x 9 places) = 1/648.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from blocks.data.record import Record
from blocks.data.synthetic.base import SyntheticCorpus
from blocks.data.synthetic.shapes import (COLOURS, SHAPES, Shape, canvas, draw_shapes, place, scatter, scene_radius,
                                           shape_meta)

QUESTIONS = ("Describe the image.", "Write a short caption.", "What is in the picture?")
DENSE_QUESTIONS = ("Describe every object and where it is.", "List the shapes and their places.")
MAX_DENSE_OBJECTS = 4
COLUMNS, ROWS = ("left", "middle", "right"), ("top", "middle", "bottom")


def caption_of(shapes: list[Shape]) -> str:
    """Name the shapes from left to right: ``"a red circle and a blue square"``."""
    return " and ".join(f"a {s.label}" for s in sorted(shapes, key=lambda s: s.x))


def place_name(shape: Shape, size: int) -> str:
    """Where the centre lies on a 3 x 3 grid over a ``size`` canvas: ``"top left"`` ... ``"bottom right"``."""
    row, column = (min(2, int(3 * v / size)) for v in (shape.y, shape.x))
    return "middle" if row == column == 1 else f"{ROWS[row]} {COLUMNS[column]}"


def dense_caption_of(shapes: list[Shape], size: int) -> str:
    """Name every shape with its place, left to right: ``"a red circle at top left and ..."``."""
    return " and ".join(f"a {s.label} at {place_name(s, size)}" for s in sorted(shapes, key=lambda s: s.x))


class CaptionCorpus(SyntheticCorpus):
    """Tasks ``caption`` and ``dense_caption``; the answer is the full caption; ``meta["shapes"]``
    lists the objects as in scene records, the ground truth claims are checked against.

    Two ``caption`` objects sit in opposite halves, so "left one first" is never ambiguous.
    """

    name = "captions"
    TASKS = {"caption": 1 / (2 * len(COLOURS) * len(SHAPES)),
             "dense_caption": 1 / (MAX_DENSE_OBJECTS * len(COLOURS) * len(SHAPES) * len(ROWS) * len(COLUMNS))}

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 image_size: int = 112) -> None:
        super().__init__(size, seed, split, tasks)
        self.image_size = image_size

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        s = self.image_size
        if task == "dense_caption":
            specs = [(rng.choice(SHAPES), rng.choice(list(COLOURS))) for _ in range(rng.randint(1, MAX_DENSE_OBJECTS))]
            shapes = scatter(rng, s, specs, scene_radius(s))
            return self._image_record(record_id, task, draw_shapes(canvas(s), shapes), rng.choice(DENSE_QUESTIONS),
                                      dense_caption_of(shapes, s), shape_meta(shapes))
        n = rng.randint(1, 2)
        halves = [(0.0, s)] if n == 1 else [(0.0, s / 2), (s / 2, s)]
        shapes: list[Shape] = []
        for x0, x1 in halves:
            r = rng.uniform(s * 0.1, s * 0.16)
            x, y = place(rng, shapes, r, (x0 + r + 1, r + 1, x1 - r - 1, s - r - 1))
            shapes.append(Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), x, y, r))
        image = draw_shapes(canvas(s), shapes)
        answer = caption_of(shapes)
        return self._image_record(record_id, task, image, rng.choice(QUESTIONS), answer, shape_meta(shapes))
