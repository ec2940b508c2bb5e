"""A held-out split of an official-format data file: which entries, and a view of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from blocks.data.record import Record

if TYPE_CHECKING:
    from blocks.data.formats import MediaSummary, OfficialJsonDataset


class EntrySplit:
    """The entries ``indices`` of an ``OfficialJsonDataset``, with its record and header accessors."""

    def __init__(self, dataset: OfficialJsonDataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Record:
        return self.dataset[self.indices[index]]

    def where(self, index: int) -> str:
        return self.dataset.where(self.indices[index])

    def media_summary(self, index: int) -> MediaSummary:
        return self.dataset.media_summary(self.indices[index])


def heldout_split(count: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of ``fraction`` of ``count`` entries (at least one), drawn by ``seed``.

    Raises:
        ValueError: fewer than two entries (nothing would be left to train on).
    """
    if count < 2:
        raise ValueError(f"cannot hold out a split of {count} entr{'y' if count == 1 else 'ies'}; "
                         f"give a separate held-out file")
    size = min(count - 1, max(1, round(count * fraction)))
    return sorted(np.random.default_rng(seed).permutation(count)[:size].tolist())
