"""What an evaluation asks: the built-in held-out tasks, or an official-format JSON/JSONL with references.

Both are lazy sequences of ``Record``s (media are made or decoded when a record is read) with a
``chance`` map (task -> chance accuracy; empty for a user's file). A record's reference answer is
``record.answer`` or else the content of its final assistant turn (which the inference prompt
drops); its verifier kind is ``record.meta["verifier"]`` (default ``auto``, as the RL reward's).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence

from blocks.data.formats import OfficialJsonDataset
from blocks.data.record import Record
from blocks.data.synthetic import make_corpus

CorpusFactory = Callable[..., Sequence[Record]]
# The held-out corpora of the main job (conf/data/synthetic.yaml `heldout`).
BUILTIN_CORPORA = ("documents", "scenes", "videos", "digits")


class HeldoutSet(Sequence[Record]):
    """The held-out split of several corpora, ``per_task`` records of each of their tasks.

    Args:
        corpora: names for ``blocks.data.synthetic.make_corpus`` (its default options), or name ->
            factory ``(split=, size=, seed=) -> Sequence[Record]`` (the training config's corpora,
            e.g. the documents with the tiny page layout).
        per_task: records per task (a corpus of k tasks gives k * per_task, tasks interleaved).
        seed: the held-out stream (the same seed gives the same records as the main job's held-out sets).
        options: with names, corpus name -> ``make_corpus`` options (e.g. the documents' ``layout``).
    """

    def __init__(self, corpora: Sequence[str] | Mapping[str, CorpusFactory] = BUILTIN_CORPORA, per_task: int = 32,
                 seed: int = 0, options: Mapping[str, Mapping] | None = None) -> None:
        if per_task < 1:
            raise ValueError(f"per_task must be >= 1, got {per_task}")
        factories = corpora if isinstance(corpora, Mapping) else \
            {name: functools.partial(make_corpus, name, **(options or {}).get(name, {})) for name in corpora}
        self.parts: list[Sequence[Record]] = []
        self.names = list(factories)
        self.chance: dict[str, float] = {}
        for factory in factories.values():
            tasks = len(getattr(factory(split="heldout", size=0, seed=seed), "chance", None) or [None])
            part = factory(split="heldout", size=per_task * tasks, seed=seed)
            self.chance.update(getattr(part, "chance", {}))
            self.parts.append(part)
        self._ends = list(_cumulative(len(p) for p in self.parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> Record:
        if not 0 <= index < len(self):
            raise IndexError(f"held-out index {index} out of range for {len(self)} records")
        part = bisect.bisect_right(self._ends, index)
        record = self.parts[part][index - (self._ends[part - 1] if part else 0)]
        # A record without a task (a user's file) is scored under its corpus name, as the teacher-forced sets are.
        return record if record.task else dataclasses.replace(record, task=self.names[part])


def _cumulative(lengths) -> list[int]:
    total, ends = 0, []
    for n in lengths:
        total += n
        ends.append(total)
    return ends


class ReferenceFile(OfficialJsonDataset):
    """An official-format JSON/JSONL file whose entries carry reference answers.

    An entry's reference is its ``"answer"`` field or its final assistant turn; its ``"verifier"``
    field (``exact``, ``numeric``, ``choice``, ``auto``) says how it is checked, its ``"task"`` names
    its row of the table (default: the file's stem). A bad entry raises ``SampleError`` naming
    ``file:line`` when read (the evaluation counts and logs it as a skip).
    """

    chance: dict[str, float] = {}

    def __init__(self, path: str | os.PathLike, **options) -> None:
        options.setdefault("task", os.path.splitext(os.path.basename(path))[0])
        super().__init__(path, **options)

    def __getitem__(self, index: int) -> Record:
        record = super().__getitem__(index)
        record.meta["verifier"] = self.entry(index).get("verifier", "auto")
        return record


def reference_of(record: Record) -> str | None:
    """The reference answer: ``record.answer``, else the final assistant turn, else None."""
    if record.answer is not None:
        return str(record.answer)
    last = record.conversations[-1]
    return last["content"] if last["role"] == "assistant" else None


def question_of(record: Record) -> str:
    """The text of the last user turn (media markers kept): the ``prompt`` field of a prediction."""
    return next(t["content"] for t in reversed(record.conversations) if t["role"] == "user")
