"""Reader for the official MiniCPM-V fine-tuning data format (a JSON list, or JSONL: one entry a line).

An entry (official ``finetune/readme.md``, extended here with video and text-only entries)::

    {"id": "0", "image": "img/0.jpg",
     "conversations": [{"role": "user", "content": "<image>\\nWhat is this?"},
                       {"role": "assistant", "content": "A cat."}]}
    {"id": "1", "image": {"<image_00>": "a.jpg", "<image_01>": "b.jpg"},
     "conversations": [{"role": "user", "content": "<image_00>\\n<image_01>\\nCompare."}, ...]}
    {"id": "2", "video": "clips/2.mp4", "fps": 3, "max_packing": 3,
     "conversations": [{"role": "user", "content": "<video>\\nWhat happens?"}, ...]}
    {"id": "3", "conversations": [...]}                                 # text only

Rules, following the official ``preprocess``:

- Single image (``"image": "path"``): the ``<image>`` marker must be in the first user turn, at most
  once; without one, ``"<image>\\n"`` is prepended to that turn (as the official code does).
- Several images (``"image": {"<image_00>": path, ...}``): every ``<image_NN>`` tag in any turn is
  replaced by ``<image>`` in order of appearance and, as officially, the pieces of a content string
  around the tags are joined with ``"\\n"``; a tag missing from the dict, or a dict entry never
  referenced, is an error.
- Videos work the same with ``"video"``, ``<video>`` and ``<video_NN>``. A video is a file (decoded
  with PyAV; ``fps`` = sampling rate) or a folder of frames sorted by name (``frame_rate`` = the
  rate they were extracted at, default ``folder_fps``; ``fps`` resamples them).
- Roles are ``user``/``assistant`` (and an optional leading ``system``); the first non-system turn
  is the user's.
- Media paths are relative to ``root`` (default: the data file's folder); a path that leaves the
  root (absolute elsewhere, or ``..``) is refused. Checked lexically so symlinked folders inside
  the root keep working.

Every entry's JSON is parsed once at construction, for its ``id``, to catch an unusable file and
duplicate ids (``blocks.data.entry_scan``); entries are validated when indexed and media decoded then,
so a bad entry costs one ``SampleError`` naming ``file:line`` and the id.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from blocks.data.errors import SampleError
from blocks.data.entry_scan import scan_entries
from blocks.data.json_spans import decode_data_file, line_spans, list_spans, refuse_invalid_utf8
from blocks.data.image_io import DEFAULT_MAX_PIXELS, image_size, load_image
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record, VideoClip
from blocks.data.splits import EntrySplit, heldout_split
from blocks.data.video import (MAX_PACKING_LIMIT, VideoProbe, clip_from_frames, plan_frames, probe_video,
                               read_video)

ROLES = ("system", "user", "assistant")
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_TAG = {IMAGE_MARKER: re.compile(r"<image_\d+>"), VIDEO_MARKER: re.compile(r"<video_\d+>")}
_FIELD = {IMAGE_MARKER: "image", VIDEO_MARKER: "video"}


@dataclass
class MediaSummary:
    """An entry's content without pixels: its turn texts (markers included), image sizes (w, h, upright)
    and the number of resampler groups of each video."""

    texts: list[str]
    image_sizes: list[tuple[int, int]]
    video_groups: list[int]


@dataclass
class _Entry:
    """One parsed entry: where it is, its raw fields, and (after parsing) turns and resolved media paths."""

    sample_id: str
    where: str
    fields: dict
    conversations: list[dict[str, str]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)

    def error(self, message: str, reason: str = "bad_entry") -> SampleError:
        return SampleError(message, sample_id=self.sample_id, where=self.where, reason=reason)

    @contextmanager
    def naming_errors(self) -> Iterator[None]:
        """Re-raise a media error (which names only its file) naming this entry too."""
        try:
            yield
        except SampleError as error:
            if error.sample_id:
                raise
            raise type(error)(str(error), sample_id=self.sample_id, where=self.where, reason=error.reason) from error


class OfficialJsonDataset:
    """Map-style source of ``Record``s over one official-format JSON or JSONL file.

    Args:
        path: the data file (UTF-8, a byte-order mark allowed). A file whose first non-blank character is
            ``[`` is a JSON list; anything else is JSONL (only a line feed ends a line; blank lines ignored).
        root: folder media paths are relative to (default: the file's folder).
        video_fps: default sampling rate for video files (model card ``encode_video`` default: 3).
        max_groups: most resampler groups per video.
        max_packing: default most frames per group (1..6); an entry's ``max_packing`` overrides it.
        folder_fps: default ``frame_rate`` of frame folders.
        time_scale: temporal-id unit in seconds.
        max_pixels: decompression-bomb limit per image.
        task: task name given to every record (an entry's ``task`` overrides it).
        duplicate_ids: ``"warn"`` (once per file, naming the ids and their lines) or ``"error"`` when
            several entries share an ``id``.

    Raises:
        SampleError: at construction, for a missing or malformed file, one with no usable entry (with the
            reasons) or, under ``duplicate_ids="error"``, duplicate ids; at ``__getitem__``, for one bad
            entry (e.g. an invalid UTF-8 byte: the rest of the file is used).
    """

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None, *, video_fps: float = 3.0,
                 max_groups: int = 180, max_packing: int = 3, folder_fps: float = 1.0, time_scale: float = 0.1,
                 max_pixels: int = DEFAULT_MAX_PIXELS, task: str = "", duplicate_ids: str = "warn") -> None:
        self.path = Path(path)
        self.root = Path(os.path.abspath(root if root is not None else self.path.parent))
        self.video_fps, self.max_groups, self.max_packing = video_fps, max_groups, max_packing
        self.folder_fps, self.time_scale, self.max_pixels, self.task = folder_fps, time_scale, max_pixels, task
        try:
            self._text = decode_data_file(self.path.read_bytes())
        except OSError as error:
            raise SampleError(f"cannot read data file: {error}", where=str(self.path), reason="unreadable_file") from error
        # Row k = (start, end, line): entry k is self._text[start:end]. One string and one integer array, not a
        # list of dicts: forked DataLoader workers would copy every object whose refcount they touch.
        is_list = self._text.lstrip().startswith("[")
        spans = list_spans(self._text, self.path.name) if is_list else line_spans(self._text, self.path.name)
        self._spans = np.array(spans, dtype=np.int64).reshape(-1, 3)
        scan_entries(self._identify, len(self), str(self.path), duplicate_ids)

    def __len__(self) -> int:
        return len(self._spans)

    def where(self, index: int) -> str:
        """``"file:line"`` of entry ``index``."""
        return f"{self.path.name}:{self._spans[index, 2]}"

    def entry(self, index: int) -> dict:
        """The parsed JSON object of entry ``index`` (no validation beyond "is an object")."""
        start, end, line = self._spans[index].tolist()  # Python ints: numpy scalars cost the scan of a big file
        where, segment = f"{self.path.name}:{line}", self._text[start:end]
        refuse_invalid_utf8(segment, self.path.name, line)
        try:
            payload = json.loads(segment)
        except json.JSONDecodeError as error:
            raise SampleError(f"malformed JSON: {error.msg} at column {error.colno}", where=where,
                              reason="malformed_json") from error
        if not isinstance(payload, dict):
            raise SampleError(f"entry must be a JSON object, got {type(payload).__name__}", where=where,
                              reason="bad_entry")
        return payload

    def _parse(self, index: int) -> _Entry:
        """Entry ``index`` validated, markers placed and media paths resolved; no media touched."""
        where = self.where(index)
        fields = self.entry(index)
        entry = _Entry(_sample_id(fields, where), where, fields)
        entry.conversations = _conversations(fields.get("conversations"), entry.error)
        images = _place_markers(entry.conversations, fields.get("image"), IMAGE_MARKER, entry.error)
        videos = _place_markers(entry.conversations, fields.get("video"), VIDEO_MARKER, entry.error)
        entry.images = [self._resolve(p, entry) for p in images]
        entry.videos = [self._resolve(p, entry) for p in videos]
        return entry

    def _identify(self, index: int) -> tuple[str, str]:
        """(sample id, ``file:line``) of entry ``index``: its JSON parsed, nothing else checked (the scan)."""
        where = self.where(index)
        return _sample_id(self.entry(index), where), where

    def __getitem__(self, index: int) -> Record:
        entry = self._parse(index)
        with entry.naming_errors():
            images = [load_image(p, max_pixels=self.max_pixels) for p in entry.images]
            videos = [self._video(p, entry) for p in entry.videos]
        return Record(id=entry.sample_id, conversations=entry.conversations, images=images, videos=videos,
                      task=str(entry.fields.get("task", self.task)), answer=entry.fields.get("answer"),
                      meta={"where": entry.where})

    def media_summary(self, index: int) -> MediaSummary:
        """What entry ``index`` holds, from file headers only (for length estimates; no pixel decoded)."""
        entry = self._parse(index)
        with entry.naming_errors():
            sizes = [image_size(p, max_pixels=self.max_pixels) for p in entry.images]
            groups = [self._video_groups(p, entry) for p in entry.videos]
        return MediaSummary([turn["content"] for turn in entry.conversations], sizes, groups)

    def _resolve(self, relative: Any, entry: _Entry) -> Path:
        if not isinstance(relative, str) or not relative:
            raise entry.error(f"media path must be a non-empty string, got {relative!r}")
        full = Path(os.path.normpath(self.root / relative))  # an absolute `relative` replaces the root
        if full != self.root and self.root not in full.parents:
            raise entry.error(f"media path {relative!r} leaves the dataset root {self.root}", reason="path_escape")
        return full

    def _video_setup(self, path: Path, entry: _Entry) -> tuple[list[Path] | None, float | None, float, dict]:
        """(frame files, or None for a video file; their frame rate; sampling fps; plan options) of a video."""
        max_packing = _number(entry, "max_packing", self.max_packing)
        if max_packing != int(max_packing) or not 1 <= max_packing <= MAX_PACKING_LIMIT:
            raise entry.error(f"max_packing must be an integer in 1..{MAX_PACKING_LIMIT}, got {max_packing}")
        options = dict(max_groups=self.max_groups, max_packing=int(max_packing))
        fps = _number(entry, "fps", None)
        if not path.is_dir():
            return None, None, fps or self.video_fps, options
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise entry.error(f"{path}: frame folder has no {sorted(FRAME_SUFFIXES)} files", reason="empty_video")
        rate = _number(entry, "frame_rate", self.folder_fps)
        return files, rate, fps or rate, options

    def _video(self, path: Path, entry: _Entry) -> VideoClip:
        files, rate, fps, options = self._video_setup(path, entry)
        if files is None:
            return read_video(path, fps, time_scale=self.time_scale, **options)
        frames = [load_image(f, max_pixels=self.max_pixels) for f in files]
        return clip_from_frames(frames, native_fps=rate, fps=fps, source=str(path), time_scale=self.time_scale,
                                **options)

    def _video_groups(self, path: Path, entry: _Entry) -> int:
        """Number of resampler groups ``_video`` would produce, from the container header / file count."""
        files, rate, fps, options = self._video_setup(path, entry)
        probe = probe_video(path) if files is None else VideoProbe(len(files), rate, 0, False, "folder")
        indices, packing = plan_frames(probe.frames, probe.rate, fps, **options)
        return -(-len(indices) // packing)


def _sample_id(fields: dict, where: str) -> str:
    sample_id = fields.get("id", where)
    if not isinstance(sample_id, (str, int)):
        raise SampleError(f"'id' must be a string or integer, got {type(sample_id).__name__}", where=where,
                          reason="bad_entry")
    return str(sample_id)


def _conversations(value: Any, fail: Callable[..., SampleError]) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise fail(f"'conversations' must be a non-empty list, got {type(value).__name__}", reason="missing_field")
    turns = []
    for k, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise fail(f"conversations[{k}] must be {{'role': one of {ROLES}, 'content': str}}, got {turn!r:.120}")
        if turn["role"] == "system" and k != 0:
            raise fail(f"conversations[{k}]: a system turn may only come first")
        turns.append({"role": turn["role"], "content": turn["content"]})
    first = turns[1] if turns[0]["role"] == "system" and len(turns) > 1 else turns[0]
    if first["role"] != "user":
        raise fail(f"the first turn must be the user's, got {first['role']!r}")
    return turns


def _place_markers(turns: list[dict[str, str]], media: Any, marker: str,
                   fail: Callable[..., SampleError]) -> list[Any]:
    """Rewrite ``turns`` in place to carry one ``marker`` per item; return the media paths in marker order."""
    key, tag = _FIELD[marker], _TAG[marker]
    present = sum(turn["content"].count(marker) for turn in turns)
    if media is None:
        if present or any(tag.search(turn["content"]) for turn in turns):
            raise fail(f"{present or 'tagged'} {marker} placeholder(s) but no {key!r} field",
                       reason="placeholder_mismatch")
        return []
    first_user = next(turn for turn in turns if turn["role"] == "user")
    if not isinstance(media, dict):
        if present == 0:
            first_user["content"] = f"{marker}\n{first_user['content']}"
        elif present > 1 or marker not in first_user["content"]:
            raise fail(f"one {key} but {present} {marker} placeholder(s) (it must be in the first user turn, "
                       f"at most once)", reason="placeholder_mismatch")
        return [media]
    if present:
        raise fail(f"{key!r} is a dict of tags, but the text has {present} plain {marker} marker(s)",
                   reason="placeholder_mismatch")
    paths, used = [], set()
    for turn in turns:
        pieces = re.split(f"({tag.pattern})", turn["content"])
        if len(pieces) == 1:
            continue
        for k, piece in enumerate(pieces):
            if tag.fullmatch(piece):
                if piece not in media:
                    raise fail(f"placeholder {piece} has no entry in {key!r} (keys {sorted(media)})",
                               reason="placeholder_mismatch")
                paths.append(media[piece])
                used.add(piece)
                pieces[k] = marker
        turn["content"] = "\n".join(pieces)
    unused = sorted(set(media) - used)
    if unused:
        raise fail(f"{len(media)} {key}(s) but {len(used)} referenced; never referenced: {unused}",
                   reason="placeholder_mismatch")
    return paths


def _number(entry: _Entry, key: str, default: float | None) -> float | None:
    value = entry.fields.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise entry.error(f"{key!r} must be a positive number, got {value!r}")
    return value


def official_corpus(train: str | os.PathLike, heldout: str | os.PathLike | None = None,
                    root: str | os.PathLike | None = None, *, split: str = "train", size: int | None = None,
                    seed: int = 0, heldout_fraction: float = 0.0,
                    **options: Any) -> OfficialJsonDataset | EntrySplit:
    """A corpus factory over official-format files, for a training stage's data mix.

    The training data module calls every corpus as ``factory(split=, size=, seed=)``; a file corpus
    ignores ``size`` and picks the file by ``split``.

    Args:
        train: the training file (JSON list or JSONL).
        heldout: the held-out file; required only when the corpus is listed as held-out, unless
            ``heldout_fraction`` splits it off ``train``.
        root: folder media paths are relative to (default: each file's folder).
        seed: draws the held-out split (the same for both splits, so they never overlap).
        heldout_fraction: without a ``heldout`` file, hold out this fraction of ``train``'s entries
            (at least one): the held-out split gets them and the training split the rest.
        options: passed to ``OfficialJsonDataset`` (``video_fps``, ``max_packing``, ``task``, ...).
    """
    if heldout is None and heldout_fraction > 0:
        dataset = OfficialJsonDataset(train, root, **options)
        held = heldout_split(len(dataset), heldout_fraction, seed)
        chosen = held if split == "heldout" else sorted(set(range(len(dataset))) - set(held))
        return EntrySplit(dataset, chosen)
    path = train if split == "train" else heldout
    if path is None:
        raise ValueError(f"corpus over {train} has no {split!r} file; set `heldout:` to evaluate on it")
    return OfficialJsonDataset(path, root, **options)
