"""Short in-memory videos of moving / appearing / flashing shapes; every question needs frame order.

Each clip has 4-6 frames split into groups of 2-3 consecutive frames (the 3D resampler's packing);
temporal ids are ``frame index * step`` with ``step`` in 0.1 s units, as in the official recipe.

Tasks (chance = best blind answer):
- ``video_direction``: one shape moves in a straight line; "Which way does the circle move?" ->
  "left" | "right" | "up" | "down" (1/4). Any single frame is consistent with every answer.
- ``video_order``: two shapes appear one after the other and stay; "Which appeared first, the red
  one or the blue one?" -> "red" (1/2: the question names both candidates).
- ``video_flash``: a light is on in 1-3 separate runs of frames; "How many times does the green
  light flash?" -> "1" | "2" | "3" (1/3).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image

from blocks.data.record import VIDEO_MARKER, Record, VideoClip
from blocks.data.synthetic.base import SyntheticCorpus, conversation
from blocks.data.synthetic.shapes import COLOURS, SHAPES, Shape, canvas, draw_shapes, scatter

DIRECTIONS = ("left", "right", "up", "down")
MAX_FLASHES = 3
STEPS = (3, 5, 10)  # frame spacing in 0.1 s units
DIRECTION_QUESTIONS = ("Which way does the {kind} move?", "In which direction is the {kind} moving?")
ORDER_QUESTIONS = ("Which appeared first, the {a} one or the {b} one?",
                   "Which shape came first, the {a} or the {b} one?")
FLASH_QUESTIONS = ("How many times does the {colour} light flash?", "How often does the {colour} light blink?")


def group_frames(n_frames: int, rng: random.Random) -> list[int]:
    """Split ``n_frames`` (4-6) into consecutive groups of 2 or 3 frames, e.g. 5 -> [3, 2] or [2, 3]."""
    options = {4: [[2, 2]], 5: [[2, 3], [3, 2]], 6: [[3, 3], [2, 2, 2]]}
    if n_frames not in options:
        raise ValueError(f"videos have 4-6 frames, got {n_frames}")
    return rng.choice(options[n_frames])


def count_runs(visible: list[bool]) -> int:
    """Number of separate runs of ``True`` (flashes) in a visibility sequence."""
    return sum(1 for i, v in enumerate(visible) if v and (i == 0 or not visible[i - 1]))


class VideoCorpus(SyntheticCorpus):
    """Videos of ``frame_size`` square frames (default 56 px: 4x4 patches of 14 per frame)."""

    name = "videos"
    TASKS = {"video_direction": 1 / len(DIRECTIONS), "video_order": 1 / 2, "video_flash": 1 / MAX_FLASHES}

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 frame_size: int = 56, reasoning: bool = False) -> None:
        super().__init__(size, seed, split, tasks, reasoning)
        self.frame_size = frame_size
        self.radius = (frame_size * 0.1, frame_size * 0.13)

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        if task == "video_direction":
            frames, question, answer, meta = self._direction(rng, rng.randint(4, 6))
        elif task == "video_order":
            frames, question, answer, meta = self._order(rng, rng.randint(4, 6))
        else:
            flashes = rng.randint(1, MAX_FLASHES)
            # k separate runs need at least 2k-1 frames.
            frames, question, answer, meta = self._flash(rng, rng.randint(max(4, 2 * flashes - 1), 6), flashes)
        step, sizes = rng.choice(STEPS), group_frames(len(frames), rng)
        ids = [i * step for i in range(len(frames))]
        starts = [sum(sizes[:g]) for g in range(len(sizes))]
        clip = VideoClip(frames=frames, groups=[ids[a:a + n] for a, n in zip(starts, sizes)], source=record_id)
        return Record(id=record_id, conversations=conversation(VIDEO_MARKER, question, answer), videos=[clip],
                      task=task, answer=answer, meta=meta)

    def _reasoning(self, record: Record) -> str:
        """What changes over the frames, in words (where the shape starts and ends, which shape comes
        first, the light's on/off runs), then the answer."""
        meta = record.meta
        if record.task == "video_direction":
            start, end = {"left": ("right", "left"), "right": ("left", "right"),
                          "up": ("bottom", "top"), "down": ("top", "bottom")}[record.answer]
            return (f"The {meta['kind']} starts at the {start} and ends at the {end}.\n"
                    f"So it moves {record.answer}.")
        if record.task == "video_order":
            (first, _), (second, _) = meta["appear"]
            return f"First the {first} one appears, then the {second} one.\nSo the first one is {record.answer}."
        pattern = meta["pattern"]
        lit = [i for i, on in enumerate(pattern) if on]
        runs = [on for i, on in enumerate(pattern[lit[0]:lit[-1] + 1]) if i == 0 or on != pattern[lit[0] + i - 1]]
        states = ", ".join("on" if on else "off" for on in runs)
        return f"The light goes {states}.\nSo the number of flashes is {record.answer}."

    def _frame(self, shapes: list[Shape]) -> Image.Image:
        return draw_shapes(canvas(self.frame_size), shapes)

    def _direction(self, rng: random.Random, n: int) -> tuple[list[Image.Image], str, str, dict]:
        s, answer = self.frame_size, rng.choice(DIRECTIONS)
        kind, colour, r = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.uniform(*self.radius)
        # Travel most of the frame along the motion axis; random offset across it.
        start, end, across = r + 1, s - r - 1, rng.uniform(r + 1, s - r - 1)
        if answer in ("left", "up"):
            start, end = end, start
        frames, path = [], []
        for i in range(n):
            along = start + (end - start) * i / (n - 1)
            x, y = (along, across) if answer in ("left", "right") else (across, along)
            frames.append(self._frame([Shape(kind, colour, x, y, r)]))
            path.append((round(x), round(y)))
        return frames, rng.choice(DIRECTION_QUESTIONS).format(kind=kind), answer, {"kind": kind, "path": path}

    def _order(self, rng: random.Random, n: int) -> tuple[list[Image.Image], str, str, dict]:
        first_colour, second_colour = rng.sample(list(COLOURS), 2)
        first, second = scatter(rng, self.frame_size, [(rng.choice(SHAPES), first_colour),
                                                       (rng.choice(SHAPES), second_colour)], self.radius)
        appear_first = rng.randint(0, n - 2)
        appear_second = rng.randint(appear_first + 1, n - 1)
        frames = [self._frame([s for s, t in ((first, appear_first), (second, appear_second)) if i >= t])
                  for i in range(n)]
        a, b = (first_colour, second_colour) if rng.random() < 0.5 else (second_colour, first_colour)
        appear = [(first_colour, appear_first), (second_colour, appear_second)]
        return frames, rng.choice(ORDER_QUESTIONS).format(a=a, b=b), first_colour, {"appear": appear}

    def _flash(self, rng: random.Random, n: int, flashes: int) -> tuple[list[Image.Image], str, str, dict]:
        # Uniform over the on/off patterns with exactly `flashes` runs (at most 2^6 candidates).
        candidates = ([bool(m >> i & 1) for i in range(n)] for m in range(2 ** n))
        patterns = [p for p in candidates if count_runs(p) == flashes]
        pattern, colour = rng.choice(patterns), rng.choice(list(COLOURS))
        (light,) = scatter(rng, self.frame_size, [("circle", colour)], self.radius)
        frames = [self._frame([light] if on else []) for on in pattern]
        return frames, rng.choice(FLASH_QUESTIONS).format(colour=colour), str(flashes), {"pattern": pattern}
