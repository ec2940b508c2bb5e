"""Coloured shapes on a plain background: the drawing vocabulary shared by scenes, captions and videos.

Colours are far apart in RGB and shapes differ in outline, so a 14-pixel patch embedding can tell
them apart at the small sizes used here (objects ~10-24 px across).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 100, 240),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (30, 30, 30)


def scene_radius(size: int) -> tuple[float, float]:
    """Radius range of the objects of a still ``size`` scene (8-11% of the side), shared by the scene
    questions and the dense captions, so contrastive pre-training sees the objects the questions ask about."""
    return size * 0.08, size * 0.11


@dataclass(frozen=True)
class Shape:
    """One object: ``kind`` in ``SHAPES``, ``colour`` in ``COLOURS``, centre (x, y) and radius in pixels."""

    kind: str
    colour: str
    x: float
    y: float
    radius: float

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"


def shape_meta(shapes: list[Shape]) -> dict[str, list[tuple[str, str, int, int]]]:
    """A record's ground truth: ``{"shapes": [(kind, colour, x, y), ...]}``, centres rounded to pixels."""
    return {"shapes": [(s.kind, s.colour, round(s.x), round(s.y)) for s in shapes]}


def canvas(size: int) -> Image.Image:
    """An empty ``size`` x ``size`` RGB image."""
    return Image.new("RGB", (size, size), BACKGROUND)


def draw_shapes(image: Image.Image, shapes: list[Shape]) -> Image.Image:
    """Draw ``shapes`` onto ``image`` in place and return it."""
    draw = ImageDraw.Draw(image)
    for s in shapes:
        fill = COLOURS[s.colour]
        box = (s.x - s.radius, s.y - s.radius, s.x + s.radius, s.y + s.radius)
        if s.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif s.kind == "square":
            # Shrunk so a square and a circle of the same radius cover similar areas.
            r = s.radius * 0.85
            draw.rectangle((s.x - r, s.y - r, s.x + r, s.y + r), fill=fill)
        elif s.kind == "triangle":
            draw.polygon([(s.x, s.y - s.radius), (s.x - s.radius, s.y + s.radius * 0.8),
                          (s.x + s.radius, s.y + s.radius * 0.8)], fill=fill)
        else:
            raise ValueError(f"unknown shape kind {s.kind!r}; expected one of {SHAPES}")
    return image


def place(rng: random.Random, taken: list[Shape], radius: float, region: tuple[float, float, float, float],
          gap: float = 3.0, tries: int = 200) -> tuple[float, float]:
    """A centre inside ``region`` = (x0, y0, x1, y1) whose disc of ``radius`` keeps ``gap`` px from ``taken``.

    Raises:
        RuntimeError: when no free spot is found (the caller asked for too many objects).
    """
    x0, y0, x1, y1 = region
    for _ in range(tries):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if all((x - s.x) ** 2 + (y - s.y) ** 2 >= (radius + s.radius + gap) ** 2 for s in taken):
            return x, y
    raise RuntimeError(f"no free spot of radius {radius} in {region} next to {len(taken)} objects")


def scatter(rng: random.Random, size: int, specs: list[tuple[str, str]], radius: tuple[float, float],
            taken: list[Shape] | None = None) -> list[Shape]:
    """Place objects given as (kind, colour) anywhere on a ``size`` canvas without overlaps."""
    shapes = list(taken or [])
    for kind, colour in specs:
        r = rng.uniform(*radius)
        x, y = place(rng, shapes, r, (r + 1, r + 1, size - r - 1, size - r - 1))
        shapes.append(Shape(kind, colour, x, y, r))
    return shapes[len(taken or []):]
