"""Token-budget batching: batches of similar-length samples whose padded size fits a token budget.

With images sliced into 1-10 slices and videos of 1-180 groups, sample lengths span 100x; a fixed
batch size either wastes most of a batch on padding or runs out of memory on the longest batch.
``TokenBudgetBatchSampler`` instead fills each batch up to ``max_tokens`` *padded* tokens
(``longest sample * batch size``, what the LLM actually computes on), drawing from pools of
shuffled samples sorted by length so padding stays small while the order stays random.

Visual content needs no padding at all (it is packed by ``blocks.batch.collate``), so videos with
different frame counts and images share batches freely: no batch-size-1 workaround.

Determinism: the batches of an epoch depend only on (lengths, seed, epoch), never on global RNG
state, so every rank and a resumed run compute the same list. Ranks take every ``world_size``-th
batch of it (padded by repetition to a multiple of ``world_size``, like ``DistributedSampler``,
so all ranks run the same number of steps).

Lengths come from ``measure_lengths`` (one pass of the real processor, cached in a JSON file: exact,
but it decodes every image and video once) or ``estimate_lengths`` (official-format files: exact text
tokens plus visual tokens from image headers and video metadata; seconds for thousands of entries).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from blocks.batch import Sample
from blocks.data.errors import SampleError
from blocks.data.formats import OfficialJsonDataset
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER
from blocks.data.slicing import plan_slices

log = logging.getLogger(__name__)


def budget_prefix(lengths: Sequence[int] | np.ndarray, max_tokens: int, max_batch_size: int | None = None) -> int:
    """How many leading samples of ``lengths`` form one batch: the most whose padded size
    ``max(length) * count`` is at most ``max_tokens`` (and at most ``max_batch_size``), at least 1.

    The one batching rule of the project: ``TokenBudgetBatchSampler`` applies it to length-sorted pools,
    the training mixture (``assemblies.training.sampling``) to the samples it draws for a step.
    """
    padded = np.maximum.accumulate(np.maximum(np.asarray(lengths, dtype=np.int64), 1)) * np.arange(1, len(lengths) + 1)
    count = int(np.argmin(padded <= max_tokens)) if (padded > max_tokens).any() else len(padded)
    return max(1, min(count, max_batch_size or count))


class TokenCounts(Dataset):
    """``count(source[i])``: the token count of every record without building its sample (the input of
    ``measure_lengths`` for token-budget batching); a record that fails counts 0 and is skipped later."""

    def __init__(self, source: Sequence, count: Callable[[object], int]) -> None:
        self.source, self.count = source, count

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> int:
        try:
            return int(self.count(self.source[index]))
        except SampleError:
            return 0


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices whose padded length ``max(len) * count`` is at most ``max_tokens``.

    Args:
        lengths: token count of every sample (an estimate is fine; 0 = unknown, counted as 1).
        max_tokens: padded-token budget per batch. A sample longer than this gets a batch of its own.
        max_batch_size: optional cap on samples per batch.
        shuffle: shuffle samples (before pooling) and batches; False keeps dataset order in pools.
        seed: with the epoch, selects the order.
        pool_size: samples sorted together; bigger pools pad less but mix lengths less randomly.
        rank, world_size: this process's shard of the batches.
        drop_last: drop the trailing batches that do not fill every rank instead of repeating some.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, *, max_batch_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, pool_size: int = 1024, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False) -> None:
        if max_tokens < 1 or pool_size < 1 or (max_batch_size is not None and max_batch_size < 1):
            raise ValueError(f"need max_tokens, pool_size, max_batch_size >= 1; got {max_tokens}, {pool_size}, "
                             f"{max_batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 1)
        self.max_tokens, self.max_batch_size = max_tokens, max_batch_size
        self.shuffle, self.seed, self.pool_size = shuffle, seed, pool_size
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        too_long = int((self.lengths > max_tokens).sum())
        if too_long:
            log.warning("%d of %d samples exceed max_tokens=%d; each gets a batch of its own", too_long,
                        len(self.lengths), max_tokens)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields (call before each epoch, like DistributedSampler)."""
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch``, in order (rank r takes items r, r + world_size, ...)."""
        if self._cache and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.pool_size):
            pool = order[start:start + self.pool_size]
            # Stable sort: equal lengths keep their shuffled order.
            batches += self._fill(pool[np.argsort(self.lengths[pool], kind="stable")])
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        remainder = len(batches) % self.world_size
        if remainder and self.drop_last:
            batches = batches[:len(batches) - remainder]
        elif remainder:
            batches += batches[:self.world_size - remainder]
        self._cache = (epoch, batches)
        return batches

    def _fill(self, indices: np.ndarray) -> list[list[int]]:
        """Greedy batches over ``indices`` sorted by length: the longest (last) sample sets the padded size."""
        batches, rest = [], indices.tolist()
        while rest:
            count = budget_prefix(self.lengths[rest], self.max_tokens, self.max_batch_size)
            batches.append(rest[:count])
            rest = rest[count:]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches(self.epoch)[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) // self.world_size

    def padding_efficiency(self, epoch: int | None = None) -> float:
        """Real tokens / padded tokens over all batches of an epoch (1.0 = no padding)."""
        batches = self.global_batches(self.epoch if epoch is None else epoch)
        real = sum(int(self.lengths[b].sum()) for b in batches)
        padded = sum(int(self.lengths[b].max()) * len(b) for b in batches)
        return real / padded if padded else 1.0


def measure_lengths(dataset: Dataset, cache_path: str | os.PathLike | None = None, key: str = "",
                    num_workers: int = 0) -> list[int]:
    """Token count of every item of ``dataset`` (a ``ProcessedDataset`` or ``TokenCounts``; skipped items
    count 0), cached.

    The cache (JSON) is reused when it holds as many lengths as the dataset has items and the same
    ``key``; put whatever changes lengths into ``key`` (data file, processor settings).
    """
    cache = Path(cache_path) if cache_path else None
    if cache and cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key and len(stored.get("lengths", [])) == len(dataset):
            return stored["lengths"]
        log.info("length cache %s is stale (key or size changed); measuring again", cache)
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_length)
    lengths = [int(length) for length in loader]
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "lengths": lengths}))
    return lengths


# Tokens around the visual spans and turns, from the official prompt layout: an image adds
# "<image_id>k</image_id>" (3-4 tokens) and each slice/group its two span markers plus a separating "\n";
# a turn adds "<|im_start|>role\n" ... "<|im_end|>\n"; the last answer an empty think block.
_IMAGE_EXTRA, _SPAN_EXTRA, _TURN_EXTRA, _THINK_EXTRA = 4, 3, 5, 4


def estimate_lengths(source: OfficialJsonDataset, count_text_tokens: Callable[[str], int], *, max_slice_nums: int = 9,
                     scale_resolution: int = 448, tokens_per_group: int = 64) -> list[int]:
    """Approximate token count of every entry of an official-format file, without decoding any pixel.

    Text is counted exactly by ``count_text_tokens`` (e.g. ``lambda s: len(tokenizer(s).input_ids)``);
    images by their slice count (``plan_slices`` on the header size); videos by their group count
    (container metadata through the sampling plan); markers and chat scaffold by the constants above.
    Entries that fail to parse count 0 (they will be skipped, with their reason, when loaded).
    """
    lengths = []
    for index in range(len(source)):
        try:
            summary = source.media_summary(index)
        except SampleError:
            lengths.append(0)
            continue
        text = sum(count_text_tokens(t.replace(IMAGE_MARKER, "").replace(VIDEO_MARKER, "")) for t in summary.texts)
        slices = sum(plan_slices(size, max_slice_nums, scale_resolution).num_slices for size in summary.image_sizes)
        spans = slices + sum(summary.video_groups)
        lengths.append(text + spans * (tokens_per_group + _SPAN_EXTRA) + _IMAGE_EXTRA * len(summary.image_sizes)
                       + _TURN_EXTRA * len(summary.texts) + _THINK_EXTRA)
    return lengths


def _length(item: object) -> int:
    # Runs in the worker: only an int crosses the process boundary, not the sample's pixels.
    if isinstance(item, int):  # TokenCounts already counted
        return item
    return item.num_tokens if isinstance(item, Sample) else 0
