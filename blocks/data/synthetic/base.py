"""The common surface of the built-in synthetic corpora.

A corpus is a map-style, stateless sequence of ``Record``s: item ``i`` is generated on the fly from a
random stream seeded by ``(corpus name, split, seed, i)``, so DataLoader workers, resumed runs and
repeated epochs all see the same data, and ``train`` / ``heldout`` use different streams.

``chance[task]`` is the accuracy of the best answer a model can give from the question text alone,
without looking at the media (for balanced tasks: 1 / number of possible answers).

With ``reasoning=True`` (scenes, videos, documents) every answer is preceded by a thinking-mode
block that works the answer out step by step from what is in the media, ``<think>\n...\n</think>\n\n``
+ answer, the long-CoT SFT format of Qwen3 / MiniCPM-V 4.5; ``record.answer`` stays the short answer
and ``record.meta["reasoning"]`` holds the trace.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import ClassVar, overload

from PIL import Image

from blocks.data.chat import THINK_CLOSE, THINK_OPEN
from blocks.data.record import IMAGE_MARKER, Record

SPLITS = ("train", "heldout")


def conversation(marker: str, question: str, answer: str) -> list[dict[str, str]]:
    """One user turn (media marker on its own line, then the question) and the assistant's answer."""
    return [{"role": "user", "content": f"{marker}\n{question}"}, {"role": "assistant", "content": answer}]


class SyntheticCorpus(Sequence[Record]):
    """Base class: subclasses set ``name``, ``TASKS`` (task -> chance) and implement ``_make``.

    Record ``i`` has task ``tasks[i % len(tasks)]``, so tasks are balanced in any prefix; inside a
    task the answer is drawn uniformly.

    Args:
        size: number of records.
        seed: selects the random stream (together with ``split``).
        split: ``"train"`` or ``"heldout"``.
        tasks: subset of ``TASKS`` to generate (default: all).
        reasoning: answer in thinking mode (corpora that implement ``_reasoning``).
    """

    name: ClassVar[str]
    TASKS: ClassVar[dict[str, float]]

    def __init__(self, size: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | None = None,
                 reasoning: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.name}: split must be one of {SPLITS}, got {split!r}")
        if size < 0:
            raise ValueError(f"{self.name}: size must be >= 0, got {size}")
        self.tasks = tuple(tasks) if tasks is not None else tuple(self.TASKS)
        unknown = [t for t in self.tasks if t not in self.TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"{self.name}: unknown or empty tasks {unknown or list(self.tasks)}; "
                             f"choose from {list(self.TASKS)}")
        self.size, self.seed, self.split, self.reasoning = size, seed, split, reasoning

    @property
    def chance(self) -> dict[str, float]:
        """Chance accuracy of each generated task."""
        return {task: self.TASKS[task] for task in self.tasks}

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name}: index {index} out of range for size {self.size}")
        # A string seed is hashed with SHA-512 by `random`, so streams do not depend on PYTHONHASHSEED.
        rng = random.Random(f"mcpv/{self.name}/{self.split}/{self.seed}/{index}")
        task = self.tasks[index % len(self.tasks)]
        record = self._make(task, rng, f"{self.name}-{self.split}-{self.seed}-{index}")
        if self.reasoning:
            trace = self._reasoning(record)
            record.meta["reasoning"] = trace
            record.conversations[-1]["content"] = f"{THINK_OPEN}\n{trace}\n{THINK_CLOSE}\n\n{record.answer}"
        return record

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(self.size))

    def _make(self, task: str, rng: random.Random, record_id: str) -> Record:
        raise NotImplementedError

    def _reasoning(self, record: Record) -> str:
        """The thinking-mode trace that leads to ``record.answer``, from the record's ``meta``."""
        raise NotImplementedError

    @staticmethod
    def _image_record(record_id: str, task: str, image: Image.Image, question: str, answer: str,
                      meta: dict | None = None) -> Record:
        return Record(id=record_id, conversations=conversation(IMAGE_MARKER, question, answer), images=[image],
                      task=task, answer=answer, meta=meta or {})
