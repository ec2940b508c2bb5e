"""Atomic claims of a scene description, checked against the built-in scenes' ground truth.

The grammar follows what the built-in corpora teach the model to say (``blocks.data.synthetic``):
dense captions ("a red circle at top left and a blue square at middle right"), short captions
("a red circle and a blue square"), and the scenes' reasoning traces ("I see a red circle at
(40, 52); ...", "That is 3 shapes.", "The only square is red.", "The only circle is in the left
column and the middle row, so it is at the left."). Claims:

- an object mention "a [colour] <shape> [at <place>]": the object exists (each mention needs its
  own object, so "a red circle and a red circle" with one red circle rejects one), and its place;
  a mention of a missing object is one rejected claim, its place is not judged separately;
- a count "<n> shapes" / "<n> [colour] <shape>s" / "one red circle": exactly n such objects;
- "the [only] [colour] <shape> is <place | colour>", and "it is ..." about the last subject.

Places: the 3 x 3 grid of the dense captions ("top left" ... "middle" ... "bottom right"), a row
or column ("the left column", "the top row"), a side ("left" = the left column, "top" = the top
row) or pixel coordinates "(x, y)" (within ``point_tolerance``). A clause nothing can be read from
is one unverifiable claim.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from blocks.data.record import Record
from blocks.data.synthetic.shapes import COLOURS, SHAPES
from blocks.rl.claims import CheckedClaim, ClaimReport, Verdict

ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "middle", "right")
_NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_NUM = r"(\d+|" + "|".join(_NUMBERS) + ")"
_COLOUR = "(" + "|".join(COLOURS) + ")"
_SHAPE = "(" + "|".join(SHAPES) + "|shape|object)"
_SYNONYMS = {"center": "middle", "centre": "middle", "upper": "top", "lower": "bottom"}
_PLACE = re.compile(
    r"(?P<rc_r>top|middle|bottom) (?P<rc_c>left|middle|right)(?: corner| side)?"
    r"|(?P<col>left|middle|right) column|(?P<row>top|middle|bottom) row"
    r"|(?P<side_c>left|right)(?: side| half| edge)?|(?P<side_r>top|bottom)(?: side| half| edge)?"
    r"|(?P<centre>middle)|@(?P<x>\d+)/(?P<y>\d+)")
_AT = r"(?:at|in|on) (?:the )?"
_MENTION = re.compile(rf"\ban? (?:{_COLOUR} )?{_SHAPE}\b")
_COUNT = re.compile(rf"\b{_NUM} (?:{_COLOUR} )?{_SHAPE}s?\b")
_STATEMENT = re.compile(rf"^(?:so |and )?(?:the (only )?(?:{_COLOUR} )?{_SHAPE}|(it)) (?:is|sits|lies) "
                        rf"(?:{_AT})?(.+)$")
_FILLER = set("i see there is are the image picture shows so it in of this a".split())


@dataclass(frozen=True)
class Place:
    """A grid ``row`` / ``column`` (0-2, ``None``: any) or a pixel ``point``."""

    row: int | None = None
    column: int | None = None
    point: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.point:
            return f"({self.point[0]}, {self.point[1]})"
        if self.row == self.column == 1:
            return "middle"
        return " ".join(n for n in (ROWS[self.row] if self.row is not None else "",
                                    COLUMNS[self.column] if self.column is not None else "") if n)


@dataclass(frozen=True)
class SceneClaim:
    """``what`` is ``mention`` (an object exists, maybe at ``place``), ``count``, ``place`` or
    ``colour`` (a statement about existing objects); ``shape`` / ``colour`` ``None`` mean any."""

    what: str
    shape: str | None
    colour: str | None = None
    place: Place | None = None
    number: int | None = None
    only: bool = False
    text: str = ""

    @property
    def label(self) -> str:
        return " ".join(w for w in (self.colour, self.shape or "shape") if w)


def _parse_place(text: str) -> Place | None:
    m = _PLACE.fullmatch(text.strip())
    if m is None:
        return None
    g = m.groupdict()
    if g["x"] is not None:
        return Place(point=(int(g["x"]), int(g["y"])))
    if g["centre"]:
        return Place(1, 1)
    row = g["rc_r"] or g["row"] or g["side_r"]
    col = g["rc_c"] or g["col"] or g["side_c"]
    return Place(ROWS.index(row) if row else None, COLUMNS.index(col) if col else None)


def _shape(word: str | None) -> str | None:
    return None if word in (None, "shape", "object") else word


def _clauses(text: str) -> list[str]:
    text = re.sub(r"</?think>", " ", text.casefold())
    text = re.sub(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)", r"@\1/\2", text)  # coordinates survive the comma split
    for word, canonical in _SYNONYMS.items():
        text = re.sub(rf"\b{word}\b", canonical, text)
    parts = re.split(r"[.;:!?\n,]|\band\b|\bwith\b|\bwhile\b|\bbut\b", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def split_scene_claims(text: str) -> list[SceneClaim]:
    """The claims of a scene description; ``what == "unverifiable"`` for clauses nothing is read from."""
    claims: list[SceneClaim] = []
    subject: tuple[str | None, str | None, bool] | None = None  # (shape, colour, only) that "it" refers to
    for clause in _clauses(text):
        statement = _STATEMENT.match(clause)
        if statement:
            only, colour, shape, pronoun, rest = statement.groups()
            if not pronoun:
                subject = (_shape(shape), colour, bool(only))
            place = _parse_place(rest)
            if subject is not None and (place or rest in COLOURS):
                what, value = ("place", place) if place else ("colour", None)
                claims.append(SceneClaim(what, subject[0], rest if what == "colour" else subject[1], value,
                                         only=subject[2], text=clause))
                continue
        found = len(claims)
        for m in _COUNT.finditer(clause):
            n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
            claims.append(SceneClaim("count", _shape(m.group(3)), m.group(2), number=n, text=m.group(0)))
        for m in _MENTION.finditer(clause):
            after = re.match(rf" {_AT}(@\d+/\d+|[a-z]+ [a-z]+|[a-z]+)", clause[m.end():])
            place = None
            if after:  # two words ("top left") if they read as a place, else one ("left")
                place = _parse_place(after.group(1)) or _parse_place(after.group(1).split()[0])
            claims.append(SceneClaim("mention", _shape(m.group(2)), m.group(1), place, text=m.group(0)))
            subject = (_shape(m.group(2)), m.group(1), False)
        if len(claims) > found:
            continue
        place = _parse_place(re.sub(rf"^(?:and |so )?(?:{_AT}|the )?", "", clause))
        if place is not None and subject is not None:
            claims.append(SceneClaim("place", subject[0], subject[1], place, only=subject[2], text=clause))
        elif not set(clause.split()) <= _FILLER:
            claims.append(SceneClaim("unverifiable", None, text=clause))
    return claims


class SceneChecker:
    """Checks scene descriptions against the scene's objects.

    Args:
        shapes: the objects as (kind, colour, x, y) centres in pixels (a scene record's ``meta["shapes"]``).
        image_size: the side of the square image in pixels.
        point_tolerance: how far (px) a claimed "(x, y)" may be from the object's centre (default 10%
            of the side, about an object's radius).
    """

    def __init__(self, shapes: Sequence[tuple[str, str, float, float]], image_size: int,
                 point_tolerance: float | None = None) -> None:
        self.shapes = [(kind, colour, float(x), float(y)) for kind, colour, x, y in shapes]
        self.size = image_size
        self.tolerance = image_size * 0.1 if point_tolerance is None else point_tolerance

    def __call__(self, response: str) -> ClaimReport:
        return ClaimReport(tuple(self.check(split_scene_claims(response))))

    def _matches(self, i: int, claim: SceneClaim) -> bool:
        kind, colour, _, _ = self.shapes[i]
        return claim.shape in (None, kind) and claim.colour in (None, colour)

    def _at(self, i: int, place: Place) -> bool:
        _, _, x, y = self.shapes[i]
        if place.point is not None:
            return math.dist((x, y), place.point) <= self.tolerance
        # Centres are stored rounded to whole pixels: allow half a pixel either side of a cell border.
        rows = {min(2, max(0, int(3 * (y + d) / self.size))) for d in (-0.5, 0.0, 0.5)}
        cols = {min(2, max(0, int(3 * (x + d) / self.size))) for d in (-0.5, 0.0, 0.5)}
        return place.row in rows | {None} and place.column in cols | {None}

    def check(self, claims: Sequence[SceneClaim]) -> list[CheckedClaim]:
        """Verdicts of ``claims``. Mentions are matched one-to-one to objects, as many as possible at
        their claimed place first, then the rest by shape and colour alone."""
        out: list[CheckedClaim] = []
        mentions = [c for c in claims if c.what == "mention"]
        objects = range(len(self.shapes))
        owner = _max_matching({k: [i for i in objects if self._matches(i, c) and self._at(i, c.place)]
                               for k, c in enumerate(mentions) if c.place is not None})
        taken = set(owner.values())
        owner |= _max_matching({k: [i for i in objects if i not in taken and self._matches(i, c)]
                                for k, c in enumerate(mentions) if k not in owner})
        for k, claim in enumerate(mentions):
            if k not in owner:
                where = f" at {claim.place}" if claim.place else ""
                out.append(CheckedClaim(f"there is a {claim.label}{where}", "rejected"))
                continue
            out.append(CheckedClaim(f"there is a {claim.label}", "accepted"))
            if claim.place is not None:
                verdict: Verdict = "accepted" if self._at(owner[k], claim.place) else "rejected"
                out.append(CheckedClaim(f"the {claim.label} is at {claim.place}", verdict))
        for claim in claims:
            if claim.what != "mention":
                out.append(CheckedClaim(claim.text, self._verdict(claim)))
        return out

    def _verdict(self, claim: SceneClaim) -> Verdict:
        if claim.what == "unverifiable":
            return "unverifiable"
        if claim.what == "count":
            return "accepted" if sum(self._matches(i, claim) for i in range(len(self.shapes))) == claim.number \
                else "rejected"
        # place / colour statements are about the objects of the subject's shape (and colour, for place)
        about = SceneClaim(claim.what, claim.shape, claim.colour if claim.what == "place" else None)
        candidates = [i for i in range(len(self.shapes)) if self._matches(i, about)]
        if not candidates or (claim.only and len(candidates) != 1):
            return "rejected"
        if claim.what == "place":
            hit = any(self._at(i, claim.place) for i in candidates)  # type: ignore[arg-type]
            return "accepted" if hit else "rejected"
        return "accepted" if any(self.shapes[i][1] == claim.colour for i in candidates) else "rejected"


def _max_matching(options: dict[int, list[int]]) -> dict[int, int]:
    """A maximum one-to-one matching of keys to one of their ``options`` (Kuhn's augmenting paths)."""
    holder: dict[int, int] = {}  # option -> key

    def assign(key: int, seen: set[int]) -> bool:
        for option in options[key]:
            if option not in seen:
                seen.add(option)
                if option not in holder or assign(holder[option], seen):
                    holder[option] = key
                    return True
        return False

    for key in options:
        assign(key, set())
    return {key: option for option, key in holder.items()}


def scene_checker(record: Record) -> SceneChecker:
    """The checker of a scene or caption record (``meta["shapes"]`` and its one square image)."""
    shapes = record.meta.get("shapes")
    if shapes is None or len(record.images) != 1:
        raise ValueError(f"record {record.id!r}: scene claims need meta['shapes'] and one image")
    return SceneChecker(shapes, record.images[0].size[0])
