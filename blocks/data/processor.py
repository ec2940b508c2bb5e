"""Record -> Sample: media placeholders, chat template, tokens, labels, packed pixels.

``MiniCPMVProcessor(tokenizer, config)(record, mode)`` reproduces the official MiniCPM-V 4.5 prompt
(every ``<image>`` marker becomes the sliced image placeholder, every ``<video>`` marker one
``<image>`` span per frame group, see ``placeholders``) and returns a ``blocks.batch.Sample``:

- ``mode="train"``: the whole conversation; labels = token ids of the assistant turns (rule in
  ``chat``), -100 elsewhere and always -100 on visual placeholder tokens.
- ``mode="inference"``: the conversation up to the last user turn (a trailing assistant turn is the
  reference answer and is dropped) plus the generation prompt; no labels (``sample.labels is None``).

Length: with ``max_length`` set, a visual span is never cut. The processor first lowers
``max_slice_nums`` step by step down to 1, then drops video frame groups evenly (at least one per
video is kept), and if the sample still does not fit it raises ``SampleTooLong`` naming it. Text is
never truncated. The reductions are recorded in ``sample.meta``.

Video follows the official "Chat with Video" settings: frames are not sliced (``max_slice_nums=1``)
and carry no image ids; images are numbered 0, 1, ... among the record's images. With
``ProcessorConfig.video_image_id`` frame groups get ids too, numbered as the official processor
numbers its image tags: every image and every frame (grouped or not) counts one, in prompt order.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from blocks.batch import IGNORE_INDEX, Sample, empty_visual
from blocks.data.chat import render_chat
from blocks.data.errors import SampleError, SampleTooLong
from blocks.data.image_processing import process_image
from blocks.data.placeholders import (MARKERS, MarkerTokens, TokensPerGroup, constant_tokens, image_placeholder,
                                      video_placeholder)
from blocks.data.processor_config import ProcessorConfig
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record, VideoClip
from blocks.data.slicing import SliceGeometry, plan_slices

logger = logging.getLogger(__name__)
MODES = ("train", "inference")
_MARKER_RE = re.compile(f"({re.escape(IMAGE_MARKER)}|{re.escape(VIDEO_MARKER)})")


@dataclass
class _Layout:
    """One candidate visual layout: slicing per image, kept group indices per video."""

    images: list[SliceGeometry]
    kept_groups: list[list[int]]
    max_slice_nums: int


class MiniCPMVProcessor:
    """Turns ``Record``s into ``Sample``s (see the module docstring)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ProcessorConfig = ProcessorConfig(),
                 markers: MarkerTokens = MARKERS) -> None:
        self.tokenizer, self.config, self.markers = tokenizer, config, markers
        tpg = config.tokens_per_group
        self.tokens_per_group: TokensPerGroup = constant_tokens(tpg) if isinstance(tpg, int) else tpg
        ids = tokenizer.convert_tokens_to_ids
        self.span_start_ids = [ids(t) for t in markers.span_starts]
        self.span_end_ids = [ids(t) for t in markers.span_ends]
        self.id_start, self.id_end, self.unk_id = ids(markers.im_id_start), ids(markers.im_id_end), ids(markers.unk)

    def __call__(self, record: Record, mode: str = "train") -> Sample:
        ids, labels, layout, order = self._tokens(record, mode)
        return self._sample(record, order, ids, labels if mode == "train" else None, layout)

    def count_tokens(self, record: Record, mode: str = "train") -> int:
        """``len(self(record, mode).input_ids)``, with the same length reductions and errors, but without
        the pixel work (slicing plans need image sizes only): real lengths for token-budget batching."""
        return len(self._tokens(record, mode)[0])

    def _tokens(self, record: Record, mode: str) -> tuple[list[int], np.ndarray, _Layout, list[tuple[str, int]]]:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        turns = self._turns(record, mode)
        layout = _Layout([self._plan(img, self.config.max_slice_nums) for img in record.images],
                         [list(range(len(v.groups))) for v in record.videos], self.config.max_slice_nums)
        ids, labels = self._encode(record, turns, layout, mode)
        ids, labels, layout = self._fit(record, turns, layout, mode, ids, labels)
        return ids, labels, layout, _media_order(turns)

    # -- text ---------------------------------------------------------------------------------
    def _turns(self, record: Record, mode: str) -> list[dict]:
        turns = [dict(t) for t in record.conversations]
        problems = [f"turn {i} has role {t.get('role')!r}" for i, t in enumerate(turns)
                    if t.get("role") not in ("system", "user", "assistant")]
        text = "".join(t.get("content") or "" for t in turns)
        if text.count(IMAGE_MARKER) != len(record.images) or text.count(VIDEO_MARKER) != len(record.videos):
            problems.append(f"{text.count(IMAGE_MARKER)} {IMAGE_MARKER} markers for {len(record.images)} images, "
                            f"{text.count(VIDEO_MARKER)} {VIDEO_MARKER} markers for {len(record.videos)} videos")
        if problems:
            raise SampleError("; ".join(problems), sample_id=record.id, where=record.meta.get("where", ""))
        if mode == "inference":
            while turns and turns[-1]["role"] == "assistant":
                if _MARKER_RE.search(turns.pop().get("content") or ""):
                    raise SampleError("the final assistant turn (dropped for inference) contains media markers",
                                      sample_id=record.id, where=record.meta.get("where", ""))
        if not any(t["role"] == "user" for t in turns) or (mode == "train" and turns[-1]["role"] != "assistant"):
            need = "a user turn" if mode == "inference" else "a user turn and a final assistant turn"
            raise SampleError(f"conversation needs {need}", sample_id=record.id, where=record.meta.get("where", ""))
        empty = [i for i, t in enumerate(turns) if t["role"] == "assistant" and not (t.get("content") or "").strip()]
        if mode == "train" and empty:  # its only target would be the end of the turn: it teaches empty answers
            raise SampleError(f"assistant turn {empty[0]} is empty", sample_id=record.id,
                              where=record.meta.get("where", ""), reason="empty_answer")
        return turns

    def _plan(self, img: Image.Image, max_slice_nums: int) -> SliceGeometry:
        c = self.config
        return plan_slices(img.size, max_slice_nums, c.scale_resolution, c.patch_size)

    def _frame_plan(self, frame: Image.Image) -> SliceGeometry:
        return self._plan(frame, 1)

    def _group_frames(self, video: VideoClip) -> list[list[Image.Image]]:
        frames, groups, start = video.frames, [], 0
        for ids in video.groups:
            groups.append(frames[start:start + len(ids)])
            start += len(ids)
        return groups

    def _span_tokens(self, layout: _Layout, record: Record) -> list[list[int]]:
        """Visual-token count of every group, per media item in record order (images, then videos)."""
        counts = [[self.tokens_per_group([t]) for t in g.tgt_sizes] for g in layout.images]
        for video, kept in zip(record.videos, layout.kept_groups):
            groups = self._group_frames(video)
            counts.append([self.tokens_per_group([self._frame_plan(f).tgt_sizes[0] for f in groups[i]]) for i in kept])
        return counts

    def _expand(self, record: Record, turns: list[dict], layout: _Layout) -> list[dict]:
        """Turns with the media markers replaced by placeholders."""
        counts = self._span_tokens(layout, record)
        n_images, n_videos, items_before, expanded = 0, 0, 0, []
        for turn in turns:
            pieces = _MARKER_RE.split(turn.get("content") or "")
            for i in range(1, len(pieces), 2):
                if pieces[i] == IMAGE_MARKER:
                    geometry = layout.images[n_images]
                    image_id = items_before if self.config.use_image_id else None
                    pieces[i] = image_placeholder(counts[n_images], geometry.grid, image_id, self.markers)
                    n_images += 1
                    items_before += 1
                else:
                    video, kept = record.videos[n_videos], layout.kept_groups[n_videos]
                    ids = None
                    if self.config.video_image_id:  # the official numbering: a group is named by its first frame
                        firsts = np.cumsum([0] + [len(g) for g in video.groups])
                        ids = [items_before + int(firsts[g]) for g in kept]
                        items_before += len(video.frames)
                    pieces[i] = video_placeholder(counts[len(record.images) + n_videos], self.markers, ids)
                    n_videos += 1
            expanded.append({**turn, "content": "".join(pieces)})
        return expanded

    def _encode(self, record: Record, turns: list[dict], layout: _Layout, mode: str) -> tuple[list[int], np.ndarray]:
        chat = render_chat(self._expand(record, turns, layout), add_generation_prompt=mode == "inference",
                           enable_thinking=self.config.enable_thinking)
        encoding = self.tokenizer(chat.text, add_special_tokens=False, return_offsets_mapping=mode == "train")
        ids = encoding["input_ids"]
        labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
        if mode == "train":
            offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            target = np.zeros(len(ids), dtype=bool)
            for start, end in chat.target_spans:
                target |= (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
            labels[target] = np.asarray(ids)[target]
        return ids, labels

    # -- length -------------------------------------------------------------------------------
    def _fit(self, record: Record, turns: list[dict], layout: _Layout, mode: str, ids: list[int],
             labels: np.ndarray) -> tuple[list[int], np.ndarray, _Layout]:
        limit = self.config.max_length
        if limit is None or len(ids) <= limit:
            return ids, labels, layout
        for k in range(layout.max_slice_nums - 1, 0, -1):
            images = [self._plan(img, k) for img in record.images]
            if images == layout.images:
                continue  # no image changes at this k: same length
            layout = replace(layout, images=images, max_slice_nums=k)
            ids, labels = self._encode(record, turns, layout, mode)
            if len(ids) <= limit:
                return ids, labels, layout
        while len(ids) > limit and any(len(kept) > 1 for kept in layout.kept_groups):
            # A group costs its <unk> run, two markers and the "\n" between groups. Dividing by the
            # dearest group never drops more than needed; the loop re-measures.
            dearest = max(n for counts in self._span_tokens(layout, record)[len(record.images):] for n in counts) + 3
            layout = replace(layout, kept_groups=_drop_groups(record.videos, layout.kept_groups,
                                                              math.ceil((len(ids) - limit) / dearest)))
            ids, labels = self._encode(record, turns, layout, mode)
        if len(ids) > limit:
            raise SampleTooLong(f"{len(ids)} tokens > max_length {limit} even with max_slice_nums=1 and one group "
                                f"per video", sample_id=record.id, where=record.meta.get("where", ""))
        return ids, labels, layout

    # -- tensors ------------------------------------------------------------------------------
    def _bounds(self, record: Record, order: list[tuple[str, int]], ids: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """[G, 2] (start, end) of every <unk> run, checked against the planned spans."""
        starts = torch.nonzero(torch.isin(ids, torch.tensor(self.span_start_ids))).flatten() + 1
        ends = torch.nonzero(torch.isin(ids, torch.tensor(self.span_end_ids))).flatten()
        counts = self._span_tokens(layout, record)
        expected = [n for kind, i in order for n in counts[i if kind == "image" else len(record.images) + i]]
        ok = len(starts) == len(ends) == len(expected) and all(
            int(e - s) == n and bool((ids[s:e] == self.unk_id).all()) for s, e, n in zip(starts, ends, expected))
        if not ok:
            raise SampleError(f"the text itself contains image/slice marker or <unk> tokens: found {len(starts)} "
                              f"visual spans, expected {len(expected)}", sample_id=record.id,
                              where=record.meta.get("where", ""))
        return torch.stack([starts, ends], dim=1) if len(expected) else torch.zeros(0, 2, dtype=torch.long)

    def _sample(self, record: Record, order: list[tuple[str, int]], ids: list[int], labels: np.ndarray | None,
                layout: _Layout) -> Sample:
        input_ids = torch.tensor(ids, dtype=torch.long)
        bounds = self._bounds(record, order, input_ids, layout)
        labels_t = None if labels is None else self._mask_visual(torch.from_numpy(labels), input_ids, bounds)
        # (image, slicing plan) of every image and kept frame in text order, then one packed buffer.
        jobs, temporal, groups = [], [], []
        for kind, index in order:
            if kind == "image":
                geometry = layout.images[index]
                jobs.append((record.images[index], geometry))
                temporal += [-1] * geometry.num_slices
                groups += [1] * geometry.num_slices
                continue
            video = record.videos[index]
            frame_groups = self._group_frames(video)
            for g in layout.kept_groups[index]:
                jobs += [(frame, self._frame_plan(frame)) for frame in frame_groups[g]]
                temporal += video.groups[g]
                groups.append(len(frame_groups[g]))
        visual_fields = empty_visual(3 * self.config.patch_size ** 2)
        if jobs:
            patches = np.empty((sum(g.num_patches for _, g in jobs), 3 * self.config.patch_size ** 2), np.float32)
            offset = 0
            for img, geometry in jobs:
                process_image(img, geometry, out=patches[offset:offset + geometry.num_patches])
                offset += geometry.num_patches
            visual_fields = {"patches": torch.from_numpy(patches),
                             "tgt_sizes": torch.tensor([t for _, g in jobs for t in g.tgt_sizes], dtype=torch.long),
                             "temporal_ids": torch.tensor(temporal, dtype=torch.long),
                             "group_sizes": torch.tensor(groups, dtype=torch.long)}
        dropped = sum(len(v.groups) - len(k) for v, k in zip(record.videos, layout.kept_groups))
        meta = {"max_slice_nums": layout.max_slice_nums, "video_groups_dropped": dropped}
        if layout.max_slice_nums < self.config.max_slice_nums or dropped:
            logger.info("sample %r shortened to %d tokens: max_slice_nums=%d, %d video groups dropped",
                        record.id, len(ids), layout.max_slice_nums, dropped)
        return Sample(input_ids=input_ids, labels=labels_t, image_bound=bounds, sample_id=record.id, meta=meta,
                      **visual_fields)


    def _mask_visual(self, labels: torch.Tensor, input_ids: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
        """``labels`` with every placeholder token (markers, <unk> runs, image ids) set to IGNORE_INDEX."""
        visual = torch.zeros(len(input_ids), dtype=torch.bool)
        for start, end in bounds.tolist():
            visual[start - 1:end + 1] = True
        id_starts = torch.nonzero(input_ids == self.id_start).flatten().tolist()
        id_ends = torch.nonzero(input_ids == self.id_end).flatten().tolist()
        for start, end in zip(id_starts, id_ends):
            visual[start:end + 1] = True
        labels[visual] = IGNORE_INDEX  # never learn to emit placeholders, even in assistant turns
        return labels


def _media_order(turns: list[dict]) -> list[tuple[str, int]]:
    """("image", i) / ("video", j) for every marker, in text order."""
    order, counters = [], {IMAGE_MARKER: 0, VIDEO_MARKER: 0}
    for turn in turns:
        for marker in _MARKER_RE.findall(turn.get("content") or ""):
            order.append(("image" if marker == IMAGE_MARKER else "video", counters[marker]))
            counters[marker] += 1
    return order


def _drop_groups(videos: Sequence[VideoClip], kept: list[list[int]], n_drop: int) -> list[list[int]]:
    """Keep ``n_drop`` fewer groups in total, taken from the videos with most groups, spread evenly."""
    counts = [len(k) for k in kept]
    for _ in range(n_drop):
        largest = max(range(len(counts)), key=lambda i: counts[i])
        if counts[largest] == 1:
            break
        counts[largest] -= 1
    # bin centres over the full group list, like the official uniform frame sampling
    return [[(2 * i + 1) * len(v.groups) // (2 * c) for i in range(c)] for v, c in zip(videos, counts)]
