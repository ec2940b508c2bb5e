"""A small real image set that ships inside a package: scikit-learn's handwritten digits.

``sklearn.datasets.load_digits`` reads 1,797 8x8 grey scans (values 0-16) bundled with scikit-learn,
so no download is involved. Each becomes a white-on-black RGB image (default 56 px, 4x4 patches of
14) with "What digit is this?" -> "7". The split is fixed and stratified: every fifth scan of each
class is ``heldout`` (364 scans, 35-37 per class), the other 1,433 are ``train`` (139-146 per class).
Chance: 0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from blocks.data.record import IMAGE_MARKER, Record
from blocks.data.synthetic.base import SPLITS, conversation

logger = logging.getLogger(__name__)

QUESTION = "What digit is this?"
HELDOUT_EVERY = 5


@lru_cache(maxsize=1)
def _scans() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float 0-16, labels [1797] int)."""
    from sklearn.datasets import load_digits  # imported lazily: scikit-learn is slow to import

    digits = load_digits()
    return digits.images, digits.target


def split_indices(split: str) -> np.ndarray:
    """Indices of the scans in ``split`` (fixed, independent of any seed)."""
    if split not in SPLITS:
        raise ValueError(f"digits: split must be one of {SPLITS}, got {split!r}")
    labels = _scans()[1]
    heldout = np.zeros(len(labels), bool)
    for digit in range(10):
        # Stratified: every fifth scan of each class, so both splits keep the classes balanced.
        heldout[np.flatnonzero(labels == digit)[::HELDOUT_EVERY]] = True
    return np.flatnonzero(heldout) if split == "heldout" else np.flatnonzero(~heldout)


class DigitsCorpus(Sequence[Record]):
    """The digits of one split as ``Record``s (task ``digit``).

    Args:
        split: ``"train"`` or ``"heldout"``.
        size: number of records; defaults to the split's size. A larger size cycles through the train
            split; the held-out split stops at its 364 scans (a repeated scan would count twice in an
            accuracy and shrink its standard error), with a warning.
        image_size: side of the square RGB image.
    """

    name = "digits"
    chance = {"digit": 0.1}

    def __init__(self, split: str = "train", size: int | None = None, image_size: int = 56) -> None:
        self.split, self.indices, self.image_size = split, split_indices(split), image_size
        self.size = len(self.indices) if size is None else size
        if self.size < 0:
            raise ValueError(f"digits: size must be >= 0, got {size}")
        if split == "heldout" and self.size > len(self.indices):
            logger.warning("digits: the held-out split has %d scans; %d asked, %d used", len(self.indices),
                           self.size, len(self.indices))
            self.size = len(self.indices)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Record:
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"digits: index {index} out of range for size {self.size}")
        scan_index = int(self.indices[index % len(self.indices)])
        images, labels = _scans()
        grey = Image.fromarray((images[scan_index] * (255 / 16)).round().astype(np.uint8))
        image = grey.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR).convert("RGB")
        answer = str(int(labels[scan_index]))
        return Record(id=f"digits-{self.split}-{scan_index}",
                      conversations=conversation(IMAGE_MARKER, QUESTION, answer), images=[image], task="digit",
                      answer=answer, meta={"scan_index": scan_index})

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(self.size))
