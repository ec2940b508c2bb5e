"""Rendered text pages with known word boxes: OCR, knowledge and unified corruption tasks.

A page (112 x 112 px, Pillow's built-in default font at 10 px) states three facts "country ->
capital" drawn from a made-up world, each fact **twice** in different wordings ("Zorvia: Kelm" ...
"Kelm is in Zorvia"), plus two filler lines, in random line order. The pairing is random per page, so
answers must be read from the page; the repetition makes any one statement inferable from its twin.

Tasks (chance = best blind answer):
- ``doc_ocr``: one fact word (country or capital) is boxed; "What is the word in the box?" (1/24).
- ``doc_knowledge``: "What is the capital of Zorvia?" answered from the page (1/12).
- ``doc_corrupt``: the unified OCR + knowledge objective (``blocks.data.corruption``): target fact
  words are corrupted at per-region levels and boxed; the answer is their original text in reading
  order ((1/24) ** targets). ``meta["levels"]`` gives the level of each target.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from blocks.data.corruption import CorruptionConfig, Level, TextRegion, corrupt_document
from blocks.data.record import Record
from blocks.data.synthetic.base import SyntheticCorpus

PAGE_SIZE = 112
FONT_SIZE = 10
LINE_HEIGHT = 13
COUNTRIES = ("Zorvia", "Bantor", "Quelia", "Morvak", "Tessin", "Ulmar",
             "Drevia", "Paxon", "Korrin", "Velta", "Siran", "Ostel")
CAPITALS = ("Kelm", "Vost", "Arno", "Pell", "Duma", "Rikk", "Sone", "Tarn", "Lask", "Miro", "Brel", "Gant")
FILLER = ("the old map", "salt and wool", "notes on trade", "see the list", "by the river",
          "a short guide", "north and south", "roads and ports")
# Wordings of one fact; {c} = country, {k} = capital. Every wording fits the page width.
FORMS = ("{c}: {k}", "{k} is in {c}", "{c} capital: {k}", "{k} rules {c}")
FACTS_PER_PAGE = 3
FILLER_LINES = 2
OCR_QUESTIONS = ("What is the word in the box?", "Read the boxed word.", "Which word is marked?")
MULTI_OCR_QUESTIONS = ("What are the words in the boxes?", "Read the boxed words.")
KNOWLEDGE_QUESTIONS = ("What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital of {c}.")
PAPER, INK = (255, 255, 255), (20, 20, 20)


@lru_cache(maxsize=None)
def font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font (no file on disk; a fixed-size bitmap font when FreeType is missing)."""
    return ImageFont.load_default(size=FONT_SIZE)


@lru_cache(maxsize=4096)
def glyphs(text: str) -> tuple[Image.Image, int]:
    """``text`` rendered once as an "L" ink mask with its origin at (0, 0), and its advance width.

    FreeType rendering dominates page generation, and the vocabulary is closed, so each piece of
    text is rendered once per process and pasted after that (same pixels as drawing it in place).
    """
    f = font()
    advance = f.getlength(text)
    mask = Image.new("L", (math.ceil(advance) + 4, LINE_HEIGHT + 4), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=f)
    return mask, round(advance)


def render_page(lines: list[list[tuple[str, int | None]]], rng: random.Random) -> tuple[Image.Image, list[TextRegion]]:
    """Draw lines of pieces; a piece ``(text, group)`` with a group id becomes a ``TextRegion``.

    Returns:
        The page image and the regions (tight ink boxes) of all grouped pieces.
    """
    if len(lines) * LINE_HEIGHT > PAGE_SIZE - 4:
        raise ValueError(f"{len(lines)} lines do not fit on a {PAGE_SIZE}px page")
    image = Image.new("RGB", (PAGE_SIZE, PAGE_SIZE), PAPER)
    regions = []
    for row, pieces in enumerate(lines):
        x, y = rng.randint(3, 6), 3 + row * LINE_HEIGHT
        for text, group in pieces:
            mask, advance = glyphs(text)
            image.paste(INK, (x, y, x + mask.width, y + mask.height), mask)
            if group is not None:
                x0, y0, x1, y1 = mask.getbbox()
                regions.append(TextRegion(text, (x + x0, y + y0, x + x1, y + y1), group))
            x += advance
        if x > PAGE_SIZE - 2:
            raise ValueError(f"line {''.join(t for t, _ in pieces)!r} is wider than the page")
    return image, regions


def fact_line(form: str, country: str, capital: str, group: int) -> list[tuple[str, int | None]]:
    """Split a wording into pieces so the country and the capital each get their own region."""
    pieces: list[tuple[str, int | None]] = []
    rest = form
    while rest:
        start = min((i for i in (rest.find("{c}"), rest.find("{k}")) if i >= 0), default=len(rest))
        if start:
            pieces.append((rest[:start], None))
        if start < len(rest):
            pieces.append((country if rest[start + 1] == "c" else capital, group))
        rest = rest[start + 3:]
    return pieces


def random_page(rng: random.Random) -> tuple[Image.Image, list[TextRegion], list[tuple[str, str]], list[str]]:
    """A random page: image, regions of the fact words (group = fact index), facts (country, capital), line texts."""
    facts = list(zip(rng.sample(COUNTRIES, FACTS_PER_PAGE), rng.sample(CAPITALS, FACTS_PER_PAGE)))
    lines = [fact_line(form, c, k, g) for g, (c, k) in enumerate(facts) for form in rng.sample(FORMS, 2)]
    lines += [[(text, None)] for text in rng.sample(FILLER, FILLER_LINES)]
    rng.shuffle(lines)
    image, regions = render_page(lines, rng)
    return image, regions, facts, ["".join(t for t, _ in pieces) for pieces in lines]


class DocumentCorpus(SyntheticCorpus):
    """Pages of facts; see the module docstring for tasks.

    Args:
        corruption: the level mix for ``doc_corrupt`` (``CorruptionConfig`` or a plain mapping as
            in ``conf/corruption/default.yaml``); default: ``CorruptionConfig()``.
    """

    name = "documents"
    TASKS = {"doc_ocr": 1 / (len(COUNTRIES) + len(CAPITALS)), "doc_knowledge": 1 / len(CAPITALS),
             "doc_corrupt": 1 / (len(COUNTRIES) + len(CAPITALS))}

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 corruption: CorruptionConfig | Mapping | None = None) -> None:
        super().__init__(size, seed, split, tasks)
        if corruption is None or isinstance(corruption, CorruptionConfig):
            self.corruption = corruption or CorruptionConfig()
        else:
            self.corruption = CorruptionConfig.from_dict(corruption)
        if self.corruption.targets > FACTS_PER_PAGE:
            raise ValueError(f"documents: at most {FACTS_PER_PAGE} targets per page, got {self.corruption.targets}")
        # Plain OCR is the unified objective with one clean target.
        self._ocr_config = replace(self.corruption, targets=1, levels={"clean": Level()}, probabilities={"clean": 1.0})

    @property
    def chance(self) -> dict[str, float]:
        chance = super().chance
        if "doc_corrupt" in chance:
            chance["doc_corrupt"] **= self.corruption.targets
        return chance

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        image, regions, facts, lines = random_page(rng)
        meta: dict = {"lines": lines, "facts": facts}
        if task == "doc_knowledge":
            country, capital = rng.choice(facts)
            question, answer = rng.choice(KNOWLEDGE_QUESTIONS).format(c=country), capital
        else:
            config = self.corruption if task == "doc_corrupt" else self._ocr_config
            doc = corrupt_document(image, regions, config, rng)
            image = doc.image
            question = rng.choice(OCR_QUESTIONS if len(doc.targets) == 1 else MULTI_OCR_QUESTIONS)
            answer = " ".join(t.text for t in doc.targets)
            meta.update(levels=doc.levels, target_boxes=[t.box for t in doc.targets])
        return self._image_record(record_id, task, image, question, answer, meta)
