"""Rendered text pages with known word boxes: OCR, knowledge and unified corruption tasks.

A page (``PageLayout``; default 112 x 112 px, Pillow's built-in font at 10 px) states a few facts
"country -> capital" drawn from a made-up world (default three), each fact **twice** in different
wordings ("Zorvia: Kelm" ... "Kelm is in Zorvia"), plus filler lines, in random line order. The
pairing is random per page, so answers must be read from the page; the repetition makes any one
statement inferable from its twin.

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
from dataclasses import dataclass, fields, replace
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from blocks.data.corruption import CorruptionConfig, Level, TextRegion, corrupt_document
from blocks.data.record import Record
from blocks.data.synthetic.base import SyntheticCorpus

COUNTRIES = ("Zorvia", "Bantor", "Quelia", "Morvak", "Tessin", "Ulmar",
             "Drevia", "Paxon", "Korrin", "Velta", "Siran", "Ostel")
CAPITALS = ("Kelm", "Vost", "Arno", "Pell", "Duma", "Rikk", "Sone", "Tarn", "Lask", "Miro", "Brel", "Gant")
FILLER = ("the old map", "salt and wool", "notes on trade", "see the list", "by the river",
          "a short guide", "north and south", "roads and ports")
# Wordings of one fact; {c} = country, {k} = capital. All fit the default layout's width.
FORMS = ("{c}: {k}", "{k} is in {c}", "{c} capital: {k}", "{k} rules {c}")
OCR_QUESTIONS = ("What is the word in the box?", "Read the boxed word.", "Which word is marked?")
MULTI_OCR_QUESTIONS = ("What are the words in the boxes?", "Read the boxed words.")
KNOWLEDGE_QUESTIONS = ("What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital of {c}.")
PAPER, INK = (255, 255, 255), (20, 20, 20)


@dataclass(frozen=True)
class PageLayout:
    """Geometry and content amount of a page.

    Attributes:
        size: page width = height in px.
        font_size: px size of Pillow's built-in font (needs FreeType; Pillow wheels ship it).
        line_height: px from one line's top to the next.
        stroke: extra ink around every glyph in px (0: regular, 1: bold). A from-scratch tiny
            vision tower reads bold 14-px words far sooner than regular ones (``conf/page_layout/tiny.yaml``).
        top: pen y of the first line in px.
        indent: (fewest, most) px from the left edge to a line's start, drawn per line. With
            ``top``, ``line_height`` and a fixed indent the lines can sit on the vision tower's
            patch grid (``conf/page_layout/tiny.yaml``).
        facts: country -> capital facts per page, each stated twice in two different ``forms``.
        filler_lines: lines without facts.
        forms: wordings of a fact, ``{c}`` = country, ``{k}`` = capital; at least two.

    Raises:
        ValueError: when the lines do not fit on the page (checked for every word and wording).
    """

    size: int = 112
    font_size: int = 10
    line_height: int = 13
    stroke: int = 0
    top: int = 3
    indent: tuple[int, int] = (3, 6)
    facts: int = 3
    filler_lines: int = 2
    forms: tuple[str, ...] = FORMS

    def __post_init__(self) -> None:
        object.__setattr__(self, "forms", tuple(self.forms))
        object.__setattr__(self, "indent", tuple(self.indent))
        if len(self.indent) != 2 or not 0 <= self.indent[0] <= self.indent[1]:
            raise ValueError(f"page layout: indent must be [fewest, most] px with 0 <= fewest <= most, got {self.indent}")
        if len(self.forms) < 2 or not all("{c}" in f and "{k}" in f for f in self.forms):
            raise ValueError(f"page layout: need at least two forms, each with {{c}} and {{k}}; got {self.forms}")
        if not self.fits(self.lines):
            raise ValueError(f"page layout: {self.lines} lines of {self.line_height}px do not fit on a "
                             f"{self.size}px page")
        texts = [f.format(c=c, k=k) for f in self.forms for c in COUNTRIES for k in CAPITALS] + list(FILLER)
        widest = max(texts, key=font(self.font_size).getlength)
        if self.indent[1] + self.text_width(widest) > self.size - 2:
            raise ValueError(f"page layout: {widest!r} is {self.text_width(widest)}px wide at font size "
                             f"{self.font_size}, too wide for a {self.size}px page")

    @classmethod
    def from_dict(cls, cfg: Mapping | None) -> PageLayout:
        """Build from a plain mapping (e.g. a Hydra node); unknown keys are an error."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"page layout: unknown keys {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return cls(**cfg)

    @property
    def lines(self) -> int:
        return 2 * self.facts + self.filler_lines

    def fits(self, lines: int) -> bool:
        """Whether ``lines`` lines from ``top`` end above the page's last pixel row."""
        return self.top + lines * self.line_height <= self.size - 1

    def line_top(self, row: int) -> int:
        """Pen y of line ``row``."""
        return self.top + row * self.line_height

    def text_width(self, text: str) -> int:
        """Ink width of ``text`` in px, strokes included."""
        return round(font(self.font_size).getlength(text)) + 2 * self.stroke


@lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (no file on disk)."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=4096)
def glyphs(text: str, font_size: int, line_height: int, stroke: int) -> tuple[Image.Image, int]:
    """``text`` rendered once as an "L" ink mask with its pen origin at (stroke, stroke), and its advance.

    FreeType rendering dominates page generation, and the vocabulary is closed, so each piece of
    text is rendered once per process and pasted after that (same pixels as drawing it in place).
    """
    f = font(font_size)
    advance = f.getlength(text)
    mask = Image.new("L", (math.ceil(advance) + 4 + 2 * stroke, line_height + 4 + 2 * stroke), 0)
    ImageDraw.Draw(mask).text((stroke, stroke), text, fill=255, font=f, stroke_width=stroke, stroke_fill=255)
    return mask, round(advance)


def render_page(lines: list[list[tuple[str, int | None]]], rng: random.Random,
                layout: PageLayout = PageLayout()) -> tuple[Image.Image, list[TextRegion]]:
    """Draw lines of pieces; a piece ``(text, group)`` with a group id becomes a ``TextRegion``.

    Returns:
        The page image and the regions (tight ink boxes) of all grouped pieces.
    """
    if not layout.fits(len(lines)):
        raise ValueError(f"{len(lines)} lines of {layout.line_height}px do not fit on a {layout.size}px page")
    image = Image.new("RGB", (layout.size, layout.size), PAPER)
    regions = []
    for row, pieces in enumerate(lines):
        x, y = rng.randint(*layout.indent), layout.line_top(row)
        for text, group in pieces:
            mask, advance = glyphs(text, layout.font_size, layout.line_height, layout.stroke)
            left, top = x - layout.stroke, y - layout.stroke
            image.paste(INK, (left, top, left + mask.width, top + mask.height), mask)
            if group is not None:
                x0, y0, x1, y1 = mask.getbbox()
                regions.append(TextRegion(text, (left + x0, top + y0, left + x1, top + y1), group))
            x += advance
        if x + layout.stroke > layout.size - 2:
            raise ValueError(f"line {''.join(t for t, _ in pieces)!r} is wider than the {layout.size}px page "
                             f"at font size {layout.font_size}")
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


def random_page(rng: random.Random, layout: PageLayout = PageLayout()
                ) -> tuple[Image.Image, list[TextRegion], list[tuple[str, str]], list[str]]:
    """A random page: image, regions of the fact words (group = fact index), facts (country, capital), line texts."""
    facts = list(zip(rng.sample(COUNTRIES, layout.facts), rng.sample(CAPITALS, layout.facts)))
    lines = [fact_line(form, c, k, g) for g, (c, k) in enumerate(facts) for form in rng.sample(layout.forms, 2)]
    lines += [[(text, None)] for text in rng.sample(FILLER, layout.filler_lines)]
    rng.shuffle(lines)
    image, regions = render_page(lines, rng, layout)
    return image, regions, facts, ["".join(t for t, _ in pieces) for pieces in lines]


class DocumentCorpus(SyntheticCorpus):
    """Pages of facts; see the module docstring for tasks.

    Args:
        corruption: the level mix for ``doc_corrupt`` (``CorruptionConfig`` or a plain mapping as
            in ``conf/corruption/default.yaml``); default: ``CorruptionConfig()``.
        layout: page geometry (``PageLayout`` or a plain mapping of its fields); default: ``PageLayout()``.
    """

    name = "documents"
    TASKS = {"doc_ocr": 1 / (len(COUNTRIES) + len(CAPITALS)), "doc_knowledge": 1 / len(CAPITALS),
             "doc_corrupt": 1 / (len(COUNTRIES) + len(CAPITALS))}

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 corruption: CorruptionConfig | Mapping | None = None,
                 layout: PageLayout | Mapping | None = None, reasoning: bool = False) -> None:
        super().__init__(size, seed, split, tasks, reasoning)
        self.layout = layout if isinstance(layout, PageLayout) else PageLayout.from_dict(layout)
        if corruption is None or isinstance(corruption, CorruptionConfig):
            self.corruption = corruption or CorruptionConfig()
        else:
            self.corruption = CorruptionConfig.from_dict(corruption)
        if self.corruption.targets > self.layout.facts:
            raise ValueError(f"documents: at most {self.layout.facts} targets per page (one per fact), "
                             f"got {self.corruption.targets}")
        # Plain OCR is the unified objective with one clean target.
        self._ocr_config = replace(self.corruption, targets=1, levels={"clean": Level()}, probabilities={"clean": 1.0})

    @property
    def chance(self) -> dict[str, float]:
        chance = super().chance
        if "doc_corrupt" in chance:
            chance["doc_corrupt"] **= self.corruption.targets
        return chance

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        image, regions, facts, lines = random_page(rng, self.layout)
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
            # The line whose middle is nearest the middle of each target box.
            middle = [self.layout.line_top(r) + self.layout.line_height / 2 for r in range(len(lines))]
            rows = [min(range(len(lines)), key=lambda r: abs(middle[r] - (t.box[1] + t.box[3]) / 2))
                    for t in doc.targets]
            meta.update(levels=doc.levels, target_boxes=[t.box for t in doc.targets], target_rows=rows)
        return self._image_record(record_id, task, image, question, answer, meta)

    def _reasoning(self, record: Record) -> str:
        """The line that states the asked fact (for a box: the fact's other line, which the box's
        corruption does not touch), then the answer. No line numbers: they are not written on the page."""
        lines, facts = record.meta["lines"], record.meta["facts"]
        if record.task == "doc_knowledge":
            country = next(c for c, k in facts if k == record.answer)
            line = next(line for line in lines if country in line and record.answer in line)
            return f'The page says "{line}".\nSo the capital of {country} is {record.answer}.'
        words = record.answer.split(" ")
        steps = []
        for text, level, row in zip(words, record.meta["levels"], record.meta["target_rows"]):
            fact = next(f for f in facts if text in f)
            twin = next(line for i, line in enumerate(lines) if i != row and all(word in line for word in fact))
            steps.append(f'Box: {level}. The same fact reads "{twin}".')
        many = len(words) > 1
        steps.append(f"So the boxed word{'s are' if many else ' is'} {record.answer}.")
        return "\n".join(steps)
