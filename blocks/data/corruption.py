"""Unified OCR + knowledge learning: corrupt chosen text regions of a document image (paper §2.2.3).

For each document, ``config.targets`` text regions are chosen and each is corrupted at a level drawn
independently from ``config.probabilities``:

- ``clean``: untouched (plain OCR);
- ``light``: mild blur + noise, still readable ("augmented OCR");
- ``heavy``: strong blur + noise, characters ambiguous ("integrated inference": vision + context);
- ``masked``: covered by a flat fill ("contextual inference / knowledge": only the rest of the page
  and what the model knows can give the text).

The target is always the original text. Targets are outlined with a coloured box (drawn outside the
corrupted area, so it stays visible when masked). The paper publishes no noise types, strengths or
probabilities; the defaults here (``conf/corruption/default.yaml``) are our own choice, tuned so that
``light`` stays legible and ``heavy`` is not at the 10-px font sizes of the synthetic documents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Level:
    """How one corruption level alters a region; each (low, high) range is sampled uniformly per region.

    Attributes:
        noise_std: std of additive Gaussian pixel noise, on the 0-255 scale.
        blur_radius: Gaussian blur radius in pixels, applied before the noise.
        fill: when set, the region is covered by this grey value instead (noise and blur unused).
    """

    noise_std: tuple[float, float] = (0.0, 0.0)
    blur_radius: tuple[float, float] = (0.0, 0.0)
    fill: int | None = None


def _default_levels() -> dict[str, Level]:
    return {"clean": Level(), "light": Level(noise_std=(25.0, 40.0), blur_radius=(0.3, 0.6)),
            "heavy": Level(noise_std=(45.0, 65.0), blur_radius=(0.7, 1.0)), "masked": Level(fill=200)}


@dataclass(frozen=True)
class CorruptionConfig:
    """Levels, their strengths and probabilities, and how many regions per document are targets.

    Attributes:
        probabilities: level name -> sampling weight (normalised; levels with weight 0 never occur).
        levels: level name -> ``Level``; every name in ``probabilities`` needs one.
        targets: regions corrupted and asked for per document.
        pad: pixels around a region's text box that the corruption also covers.
        mark_colour: RGB of the outline that marks a target region.
    """

    probabilities: Mapping[str, float] = field(
        default_factory=lambda: {"clean": 0.25, "light": 0.25, "heavy": 0.25, "masked": 0.25})
    levels: Mapping[str, Level] = field(default_factory=_default_levels)
    targets: int = 1
    pad: int = 1
    mark_colour: tuple[int, int, int] = (220, 30, 30)

    def __post_init__(self) -> None:
        missing = [name for name in self.probabilities if name not in self.levels]
        if missing:
            raise ValueError(f"corruption levels {missing} have a probability but no definition in `levels`")
        if any(p < 0 for p in self.probabilities.values()) or sum(self.probabilities.values()) <= 0:
            raise ValueError("corruption probabilities must be >= 0 with a positive sum, "
                             f"got {dict(self.probabilities)}")
        if self.targets < 1:
            raise ValueError(f"corruption targets must be >= 1, got {self.targets}")

    @classmethod
    def from_dict(cls, cfg: Mapping) -> CorruptionConfig:
        """Build from plain mappings/lists (e.g. a YAML file or ``OmegaConf.to_container``)."""
        cfg = dict(cfg)
        if "levels" in cfg:
            cfg["levels"] = {name: Level(**{k: (tuple(v) if isinstance(v, Sequence) else v) for k, v in spec.items()})
                             for name, spec in cfg["levels"].items()}
        if "mark_colour" in cfg:
            cfg["mark_colour"] = tuple(cfg["mark_colour"])
        return cls(**cfg)


@dataclass(frozen=True)
class TextRegion:
    """A piece of text on a document image.

    Attributes:
        text: the original text.
        box: (x0, y0, x1, y1) pixel bounds of the rendered text, end-exclusive.
        group: regions with the same group state the same fact; targets come from distinct groups so
            a masked target stays inferable from its twin elsewhere on the page.
    """

    text: str
    box: Box
    group: int


@dataclass
class CorruptedDocument:
    """The corrupted image, its target regions in reading order and the level applied to each."""

    image: Image.Image
    targets: list[TextRegion]
    levels: list[str]


def sample_levels(n: int, config: CorruptionConfig, rng: random.Random) -> list[str]:
    """Draw ``n`` independent level names from ``config.probabilities``."""
    names = list(config.probabilities)
    return rng.choices(names, weights=[config.probabilities[k] for k in names], k=n)


def padded(box: Box, pad: int, size: tuple[int, int]) -> Box:
    """``box`` grown by ``pad`` px on every side, clipped to an image of ``size`` = (width, height)."""
    x0, y0, x1, y1 = box
    return max(0, x0 - pad), max(0, y0 - pad), min(size[0], x1 + pad), min(size[1], y1 + pad)


def corrupt_region(image: Image.Image, box: Box, level: Level, rng: random.Random) -> None:
    """Corrupt ``box`` of the RGB ``image`` in place; pixels outside ``box`` are never changed."""
    if level.fill is not None:
        image.paste((level.fill,) * 3, box)
        return
    radius, std = rng.uniform(*level.blur_radius), rng.uniform(*level.noise_std)
    x0, y0, x1, y1 = box
    if radius > 0:
        # Blur a crop with a margin so the region's border pixels see their real neighbours.
        m = math.ceil(3 * radius)
        outer = padded(box, m, image.size)
        blurred = image.crop(outer).filter(ImageFilter.GaussianBlur(radius))
        image.paste(blurred.crop((x0 - outer[0], y0 - outer[1], x1 - outer[0], y1 - outer[1])), box)
    if std > 0:
        region = np.asarray(image.crop(box), dtype=np.float32)
        # One noise value per pixel for all channels: grey speckle, like a bad scan, not colour confetti.
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, std, (*region.shape[:2], 1))
        image.paste(Image.fromarray(np.clip(region + noise, 0, 255).round().astype(np.uint8)), box)


def mark(image: Image.Image, boxes: Sequence[Box], colour: tuple[int, int, int]) -> None:
    """Outline each box one pixel outside its bounds, in place."""
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=colour)


def corrupt_document(image: Image.Image, regions: Sequence[TextRegion], config: CorruptionConfig,
                     rng: random.Random, levels: Sequence[str] | None = None) -> CorruptedDocument:
    """Choose ``config.targets`` regions from distinct groups, corrupt and mark them.

    Args:
        image: the clean document (not modified).
        regions: the candidate target regions (text that the page makes inferable).
        config: levels and probabilities.
        rng: the sample's random stream (region choice, levels, noise).
        levels: force these levels (one per target) instead of sampling them, e.g. for a sheet
            showing one document at every level.

    Returns:
        The corrupted copy, the targets sorted in reading order (top-to-bottom, left-to-right) and
        their levels.
    """
    by_group: dict[int, list[TextRegion]] = {}
    for region in regions:
        by_group.setdefault(region.group, []).append(region)
    if len(by_group) < config.targets:
        raise ValueError(f"need {config.targets} target regions from distinct groups, the document has {len(by_group)}")
    targets = [rng.choice(by_group[g]) for g in rng.sample(sorted(by_group), config.targets)]
    chosen = list(levels) if levels is not None else sample_levels(len(targets), config, rng)
    if len(chosen) != len(targets):
        raise ValueError(f"{len(chosen)} levels given for {len(targets)} targets")
    unknown = [name for name in chosen if name not in config.levels]
    if unknown:
        raise ValueError(f"unknown corruption levels {unknown}; configured: {list(config.levels)}")
    order = sorted(range(len(targets)), key=lambda i: (targets[i].box[1], targets[i].box[0]))
    targets, chosen = [targets[i] for i in order], [chosen[i] for i in order]
    out = image.convert("RGB")  # a copy, also for RGB input
    boxes = [padded(t.box, config.pad, out.size) for t in targets]
    for box, name in zip(boxes, chosen):
        corrupt_region(out, box, config.levels[name], rng)
    mark(out, boxes, config.mark_colour)
    return CorruptedDocument(out, targets, chosen)
