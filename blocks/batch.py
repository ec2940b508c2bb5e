"""The typed batch schema shared by the data blocks and the assemblies.

Visual content is *packed*: the patches of every slice and frame in the batch are concatenated
along one axis, so slices of different sizes and videos with different frame counts never need
padding. Three small index tensors describe the packing:

- ``tgt_sizes`` [S, 2]: (patch rows, patch cols) of each slice/frame, in packing order.
- ``temporal_ids`` [S]: a frame's timestamp id (0.1 s units in the official recipe); -1 for image
  slices, which get no temporal embedding.
- ``group_sizes`` [G]: consecutive slices that the resampler compresses together. An image slice is a
  group of one; a video group holds 1-6 frames. ``group_sizes.sum() == S``.

Text is a padded [B, T] block (the LLM side), and ``image_bound`` [G, 3] says where each group's
visual tokens go: (batch row, start, end), ``end - start`` = number of tokens the group yields
(64 for the resampler), in group order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100


def packed_layout_problems(rows: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> list[str]:
    """What is inconsistent between packed visual rows [N, ...] and the tensors that describe them."""
    problems = []
    num_patches = int((tgt_sizes[:, 0] * tgt_sizes[:, 1]).sum()) if len(tgt_sizes) else 0
    if rows.shape[0] != num_patches:
        problems.append(f"{rows.shape[0]} patch rows but tgt_sizes describe {num_patches} patches")
    if len(temporal_ids) != len(tgt_sizes):
        problems.append(f"{len(temporal_ids)} temporal_ids for {len(tgt_sizes)} slices")
    if int(group_sizes.sum()) != len(tgt_sizes) or bool((group_sizes < 1).any()):
        problems.append(f"group_sizes {group_sizes.tolist()} must be >= 1 and sum to {len(tgt_sizes)} slices")
    return problems


def check_packed_layout(rows: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> None:
    """Raise ValueError when packed visual rows and the tensors that describe them disagree."""
    problems = packed_layout_problems(rows, tgt_sizes, temporal_ids, group_sizes)
    if problems:
        raise ValueError("inconsistent packed visual input: " + "; ".join(problems))


def empty_visual(patch_dim: int = 3 * 14 * 14) -> dict[str, Tensor]:
    """The packed visual fields of a sample that has no image or video."""
    return {
        "patches": torch.zeros(0, patch_dim),
        "tgt_sizes": torch.zeros(0, 2, dtype=torch.long),
        "temporal_ids": torch.zeros(0, dtype=torch.long),
        "group_sizes": torch.zeros(0, dtype=torch.long),
    }


@dataclass
class Sample:
    """One tokenized sample, ready to collate.

    Shapes: input_ids/labels [T]; patches [N, 3*P*P] (each row one patch, flattened c, y, x);
    tgt_sizes [S, 2]; temporal_ids [S]; group_sizes [G]; image_bound [G, 2] (start, end) in this
    sample's token positions. ``labels`` is None for an inference prompt (nothing to learn).
    """

    input_ids: Tensor
    labels: Tensor | None
    patches: Tensor
    tgt_sizes: Tensor
    temporal_ids: Tensor
    group_sizes: Tensor
    image_bound: Tensor
    sample_id: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = packed_layout_problems(self.patches, self.tgt_sizes, self.temporal_ids, self.group_sizes)
        if self.labels is not None and self.input_ids.shape != self.labels.shape:
            problems.append(f"labels {tuple(self.labels.shape)} != input_ids {tuple(self.input_ids.shape)}")
        if len(self.image_bound) != len(self.group_sizes):
            problems.append(f"{len(self.image_bound)} image_bound spans for {len(self.group_sizes)} groups")
        if problems:
            raise ValueError(f"sample {self.sample_id!r}: " + "; ".join(problems))

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class MultimodalBatch:
    """A collated batch. See the module docstring for the packed visual layout.

    Shapes: input_ids [B, T] long; attention_mask [B, T] bool (True = real token; padding is
    found by position, never by token id); labels [B, T] long with IGNORE_INDEX where no loss, or
    None for inference prompts;
    patches [N, 3*P*P] float; tgt_sizes [S, 2] long; temporal_ids [S] long; group_sizes [G] long;
    image_bound [G, 3] long (row, start, end).
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None
    patches: Tensor
    tgt_sizes: Tensor
    temporal_ids: Tensor
    group_sizes: Tensor
    image_bound: Tensor
    sample_ids: list[str] = field(default_factory=list)
    # (sample id, reason) of samples dropped while building this batch; travels from data-loader
    # workers to the main process so skips are counted, not lost.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # A stand-in for a micro-batch whose samples were all skipped (``blocks.data.dataset.SkippingCollate``):
    # trained with weight 0, so every data-parallel rank still joins the gradient collectives.
    filler: bool = False

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "MultimodalBatch":
        """Move tensors to ``device``; ``dtype`` applies to the float pixel patches only."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device, dtype=dtype if (dtype and value.is_floating_point()) else None, non_blocking=True)
            moved[f.name] = value
        return replace(self, **moved)

    def pin_memory(self) -> "MultimodalBatch":
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_sizes.shape[0])

    def sample_name(self, row: int) -> str:
        """The sample id of batch row ``row`` for error messages (``"row <n>"`` when ids are absent)."""
        return self.sample_ids[row] if 0 <= row < len(self.sample_ids) else f"row {row}"


def collate(samples: Sequence[Sample], pad_id: int, padding_side: str = "right",
            pad_to_multiple_of: int = 1, skipped: Sequence[tuple[str, str]] = ()) -> MultimodalBatch:
    """Pad the text of ``samples`` to one length and pack their visual fields.

    ``image_bound`` spans are shifted by the left padding so they keep pointing at the placeholders.
    Inference prompts (``labels=None``) give a batch with ``labels=None``: it computes no loss.

    Raises:
        ValueError: no samples, or training samples (with labels) mixed with inference prompts.
    """
    if not samples:
        raise ValueError("collate() needs at least one sample")
    with_labels = [s.labels is not None for s in samples]
    if any(with_labels) and not all(with_labels):
        names = [s.sample_id for s, has in zip(samples, with_labels) if not has]
        raise ValueError(f"cannot collate training samples with inference prompts (no labels): {names[:5]}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    longest = max(s.num_tokens for s in samples)
    length = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    batch_size = len(samples)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.bool)
    bounds = []
    for row, sample in enumerate(samples):
        n = sample.num_tokens
        start = length - n if padding_side == "left" else 0
        input_ids[row, start:start + n] = sample.input_ids
        if sample.labels is not None:
            labels[row, start:start + n] = sample.labels
        attention_mask[row, start:start + n] = True
        if len(sample.image_bound):
            rows = torch.full((len(sample.image_bound), 1), row, dtype=torch.long)
            bounds.append(torch.cat([rows, sample.image_bound.long() + start], dim=1))
    return MultimodalBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels if with_labels[0] else None,
        patches=torch.cat([s.patches for s in samples]),
        tgt_sizes=torch.cat([s.tgt_sizes for s in samples]).long(),
        temporal_ids=torch.cat([s.temporal_ids for s in samples]).long(),
        group_sizes=torch.cat([s.group_sizes for s in samples]).long(),
        image_bound=torch.cat(bounds) if bounds else torch.zeros(0, 3, dtype=torch.long),
        sample_ids=[s.sample_id for s in samples],
        skipped=list(skipped),
    )


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """[B, T] positions counting real tokens only, so a left-padded row starts at 0 where its text starts."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0)


def select_rows(batch: MultimodalBatch, rows: Sequence[int]) -> MultimodalBatch:
    """The sub-batch of rows ``rows`` (in that order) with their packed visual groups, slices and patches.

    Groups of one row are contiguous in the packed layout and rows follow each other (``collate``).
    """
    rows = list(rows)
    slice_end = batch.group_sizes.cumsum(0)
    patch_end = (batch.tgt_sizes[:, 0] * batch.tgt_sizes[:, 1]).cumsum(0)
    group_rows = batch.image_bound[:, 0].tolist()
    groups = [g for r in rows for g, row in enumerate(group_rows) if row == r]
    slices = [s for g in groups for s in range(int(slice_end[g] - batch.group_sizes[g]), int(slice_end[g]))]
    patches = [p for s in slices for p in range(int(patch_end[s] - batch.tgt_sizes[s].prod()), int(patch_end[s]))]
    bounds = batch.image_bound[groups].clone()
    bounds[:, 0] = torch.tensor([rows.index(r) for r in bounds[:, 0].tolist()], dtype=torch.long)
    index = torch.tensor(rows, dtype=torch.long)
    return MultimodalBatch(input_ids=batch.input_ids[index], attention_mask=batch.attention_mask[index],
                           labels=None if batch.labels is None else batch.labels[index],
                           patches=batch.patches[patches], tgt_sizes=batch.tgt_sizes[slices],
                           temporal_ids=batch.temporal_ids[slices], group_sizes=batch.group_sizes[groups],
                           image_bound=bounds, sample_ids=[batch.sample_name(r) for r in rows])
