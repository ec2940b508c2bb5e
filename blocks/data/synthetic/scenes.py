"""Scenes of coloured shapes with count, colour and position questions.

Tasks (chance = best blind answer):
- ``scene_count``: 1-6 objects, "How many shapes are there?" -> "1".."6" (1/6).
- ``scene_colour``: the only object of a kind, "What colour is the square?" -> one of 6 colours (1/6).
- ``scene_position``: the only object of a kind sits in the left/right/top/bottom band,
  "Where is the circle?" -> "left" | "right" | "top" | "bottom" (1/4).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from blocks.data.record import Record
from blocks.data.synthetic.base import SyntheticCorpus
from blocks.data.synthetic.captions import place_name
from blocks.data.synthetic.shapes import (COLOURS, SHAPES, Shape, canvas, draw_shapes, place, scatter, scene_radius,
                                           shape_meta)

MAX_COUNT = 6
POSITIONS = ("left", "right", "top", "bottom")
COUNT_QUESTIONS = ("How many shapes are there?", "How many objects are in the image?", "Count the shapes.")
COLOUR_QUESTIONS = ("What colour is the {kind}?", "Which colour does the {kind} have?",
                    "Name the colour of the {kind}.")
# The place (``captions.place_name``) of each answer's band: the outer third on that side, the middle third across.
SIDE_PLACES = {"left": "middle left", "right": "middle right", "top": "top middle", "bottom": "bottom middle"}
POSITION_QUESTIONS = ("Where is the {kind}?", "On which side is the {kind}?", "Where is the {kind} placed?")


class SceneCorpus(SyntheticCorpus):
    """Shapes on a dark ``image_size`` square (default 112 px: 8x8 patches of 14).

    Example:
        >>> record = SceneCorpus(size=10, seed=0)[0]   # task "scene_count"
        >>> record.images[0].size, record.answer in {"1", "2", "3", "4", "5", "6"}
        ((112, 112), True)
    """

    name = "scenes"
    TASKS = {"scene_count": 1 / MAX_COUNT, "scene_colour": 1 / len(COLOURS), "scene_position": 1 / len(POSITIONS)}

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 image_size: int = 112, reasoning: bool = False) -> None:
        super().__init__(size, seed, split, tasks, reasoning)
        if image_size < 56:
            raise ValueError(f"scenes: image_size must be >= 56 to fit {MAX_COUNT} objects, got {image_size}")
        self.image_size = image_size
        self.radius = scene_radius(image_size)

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        if task == "scene_count":
            n = rng.randint(1, MAX_COUNT)
            specs = [(rng.choice(SHAPES), rng.choice(list(COLOURS))) for _ in range(n)]
            shapes = scatter(rng, self.image_size, specs, self.radius)
            question, answer = rng.choice(COUNT_QUESTIONS), str(n)
        elif task == "scene_colour":
            target, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            shapes = scatter(rng, self.image_size, [(target, colour)] + self._distractors(rng, target), self.radius)
            question, answer = rng.choice(COLOUR_QUESTIONS).format(kind=target), colour
        else:
            target, answer = rng.choice(SHAPES), rng.choice(POSITIONS)
            r = rng.uniform(*self.radius)
            x, y = place(rng, [], r, self._band(answer, r))
            first = Shape(target, rng.choice(list(COLOURS)), x, y, r)
            shapes = [first] + scatter(rng, self.image_size, self._distractors(rng, target), self.radius, [first])
            question = rng.choice(POSITION_QUESTIONS).format(kind=target)
        image = draw_shapes(canvas(self.image_size), shapes)
        return self._image_record(record_id, task, image, question, answer, shape_meta(shapes))

    def _reasoning(self, record: Record) -> str:
        """One line per shape from left to right with its place on the 3 x 3 grid of the dense captions
        ("red circle at top left"), then the answer. Places, not pixels: a 16-token image shows where a
        shape is, not its coordinates."""
        shapes = [Shape(kind, colour, x, y, 0.0) for kind, colour, x, y in record.meta["shapes"]]
        places = [place_name(s, self.image_size) for s in shapes]
        target = shapes[0]  # the asked-about object comes first
        if record.task == "scene_position":  # its band is that side's cell; the rounded centre may sit on an edge
            places[0] = SIDE_PLACES[record.answer]
        seen = [f"{s.label} at {where}" for s, where in sorted(zip(shapes, places), key=lambda pair: pair[0].x)]
        conclusion = {"scene_count": f"So the number of shapes is {record.answer}.",
                      "scene_colour": f"So the {target.kind} is {record.answer}.",
                      "scene_position": f"So the {target.kind} is at the {record.answer}."}[record.task]
        return "\n".join([*seen, conclusion])

    @staticmethod
    def _distractors(rng: random.Random, target: str) -> list[tuple[str, str]]:
        """0-3 objects of other kinds, so the target kind stays unique in the scene."""
        others = [k for k in SHAPES if k != target]
        return [(rng.choice(others), rng.choice(list(COLOURS))) for _ in range(rng.randint(0, 3))]

    def _band(self, position: str, r: float) -> tuple[float, float, float, float]:
        """Where a centre must lie to be unambiguously at ``position``: the outer third on that side,
        the middle third across it."""
        s, lo, hi = self.image_size, r + 1, self.image_size - r - 1
        third = s / 3
        bands = {"left": (lo, third, third - r / 2, 2 * third), "right": (2 * third + r / 2, third, hi, 2 * third),
                 "top": (third, lo, 2 * third, third - r / 2), "bottom": (third, 2 * third + r / 2, 2 * third, hi)}
        return bands[position]
