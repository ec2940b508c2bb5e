"""Token-budget batching: budget respected, little padding, deterministic per (seed, epoch), sharded
across ranks, ragged videos and images in one batch, DataLoader workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from blocks.data.batching import TokenBudgetBatchSampler, estimate_lengths, measure_lengths
from blocks.data.dataset import ProcessedDataset, SkippingCollate, SkipReport
from blocks.data.formats import OfficialJsonDataset
from blocks.data.record import Record
from blocks.data.video import clip_from_frames
from media_helpers import StandInProcessor, write_video

LENGTHS = np.random.default_rng(0).integers(20, 2000, size=500).tolist()


def _padded(batch):
    return max(LENGTHS[i] for i in batch) * len(batch)


def test_budget_respected_and_every_sample_once():
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert max(_padded(b) for b in batches) <= 4096
    # Sorting inside pools keeps padding small; random batches of the same sizes would pad far more.
    assert sampler.padding_efficiency() > 0.9
    rng = np.random.default_rng(0)
    order = rng.permutation(500)
    sizes, random_batches, at = [len(b) for b in batches], [], 0
    for size in sizes:
        random_batches.append(order[at:at + size].tolist())
        at += size
    random_efficiency = sum(LENGTHS) / sum(_padded(b) for b in random_batches)
    assert random_efficiency < 0.75


def test_deterministic_per_seed_and_epoch():
    a = TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=3)
    b = TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=3)
    torch.manual_seed(123)
    np.random.seed(123)  # global RNG state must not matter
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=4)) != list(b)


def test_ranks_share_the_work_evenly():
    world = 3
    shards = [list(TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=0, rank=r, world_size=world))
              for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    seen = [i for shard in shards for b in shard for i in b]
    assert set(seen) == set(range(500))
    full = TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=0, world_size=world).global_batches(0)
    assert len(full) % world == 0 and shards[1] == full[1::world]
    dropped = [list(TokenBudgetBatchSampler(LENGTHS, max_tokens=4096, seed=0, rank=r, world_size=world,
                                            drop_last=True)) for r in range(world)]
    flat = [i for shard in dropped for b in shard for i in b]
    assert len(flat) == len(set(flat))  # no sample repeated when dropping


def test_oversized_sample_alone_and_batch_size_cap():
    sampler = TokenBudgetBatchSampler([10, 10, 10, 5000, 10], max_tokens=100, max_batch_size=2, shuffle=False)
    assert sorted(map(sorted, sampler)) == [[0, 1], [2, 4], [3]]
    assert len(sampler) == 3
    with pytest.raises(ValueError, match="rank"):
        TokenBudgetBatchSampler(LENGTHS, max_tokens=10, rank=2, world_size=2)


def _frames(n):
    return [Image.new("RGB", (14, 14), (10 * k, 0, 0)) for k in range(n)]


def _records():
    ask = [{"role": "user", "content": "<video>\nwhat?"}, {"role": "assistant", "content": "ok"}]
    clips = [clip_from_frames(_frames(n), native_fps=1, max_packing=3, max_groups=2) for n in (3, 6, 2)]
    records = [Record(f"v{k}", [dict(t) for t in ask], videos=[clip]) for k, clip in enumerate(clips)]
    records.append(Record("img", [{"role": "user", "content": "<image>\nhi"}, {"role": "assistant", "content": "x"}],
                          images=[Image.new("RGB", (30, 20), "blue")]))
    return records


def test_ragged_videos_and_an_image_in_one_batch():
    records = _records()
    assert [[len(g) for g in r.videos[0].groups] for r in records[:3]] == [[2, 1], [3, 3], [1, 1]]
    dataset = ProcessedDataset(records, StandInProcessor())
    batch = SkippingCollate(pad_id=0)([dataset[k] for k in range(4)])
    assert batch.batch_size == 4 and batch.skipped == []
    assert batch.group_sizes.tolist() == [2, 1, 3, 3, 1, 1, 1]
    assert batch.tgt_sizes.shape[0] == 12 and batch.patches.shape == (12 * 4, 588)
    assert batch.temporal_ids.tolist()[-1] == -1 and batch.temporal_ids.tolist()[:3] == [0, 10, 20]
    assert batch.image_bound[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3]
    rows, starts = batch.image_bound[:, 0], batch.image_bound[:, 1]
    assert (batch.input_ids[rows, starts] == 1).all()  # every span starts on a placeholder


def test_dataloader_with_workers_and_measured_lengths(tmp_path):
    records = _records() * 3
    records.append(Record("bad", [{"role": "user", "content": "no answer"}]))  # stand-in: no loss -> skip
    dataset = ProcessedDataset(records, StandInProcessor())
    cache = tmp_path / "lengths.json"
    lengths = measure_lengths(dataset, cache, key="v1")
    assert lengths[-1] == 0 and min(lengths[:-1]) > 0 and cache.exists()
    assert measure_lengths(dataset, cache, key="v1") == lengths
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=60, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=SkippingCollate(pad_id=0), num_workers=2)
    report, ids = SkipReport(), []
    for batch in loader:
        report.update(batch)
        ids += batch.sample_ids
        assert batch.input_ids.numel() <= 60
    assert report.counts == {"no_loss": 1} and report.used == 12 and sorted(ids) == sorted(r.id for r in records[:-1])


def test_estimate_lengths_from_headers_only(tmp_path):
    Image.new("RGB", (1000, 700)).save(tmp_path / "big.png")  # 2x2 grid + source = 5 slices at 448
    write_video(tmp_path / "clip.mp4", n_frames=30, rate=10)  # 3 s at 2 fps: 6 frames, one per group
    chat = [{"role": "user", "content": "<image>\ntwo words"}, {"role": "assistant", "content": "three more words"}]
    lines = [{"id": "i", "image": "big.png", "conversations": chat},
             {"id": "v", "video": "clip.mp4", "fps": 2, "conversations": [dict(chat[0], content="<video>\nq"), chat[1]]},
             {"id": "gone", "image": "missing.png", "conversations": chat}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    words = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    lengths = estimate_lengths(OfficialJsonDataset(tmp_path / "d.jsonl"), words)
    # text + spans * (64 + 3) + 4 per image + 5 per turn + 4 (think block)
    assert lengths == [5 + 5 * 67 + 4 + 10 + 4, 4 + 6 * 67 + 10 + 4, 0]
