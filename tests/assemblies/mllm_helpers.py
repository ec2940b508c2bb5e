"""Batches for the assembly's tests (test_mllm, test_official_checkpoint)."""

from __future__ import annotations

import torch

from blocks.batch import IGNORE_INDEX, Sample

PATCH_DIM = 3 * 14 * 14


def make_sample(n_text: int, sizes: list[tuple[int, int]], queries: int = 16, sample_id: str = "s") -> Sample:
    """Text, then one image group per size, each with ``queries`` placeholders; labels on the tail text."""
    ids, bounds = list(torch.randint(1, 1024, (n_text,)).tolist()), []
    for _ in sizes:
        bounds.append((len(ids) + 1, len(ids) + 1 + queries))
        ids += [5] + [7] * queries + [6] + torch.randint(1, 1024, (3,)).tolist()
    input_ids = torch.tensor(ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[-3:] = input_ids[-3:]
    n_patches = sum(h * w for h, w in sizes)
    return Sample(input_ids=input_ids, labels=labels, patches=torch.randn(n_patches, PATCH_DIM),
                  tgt_sizes=torch.tensor(sizes, dtype=torch.long).view(-1, 2),
                  temporal_ids=torch.full((len(sizes),), -1), group_sizes=torch.ones(len(sizes), dtype=torch.long),
                  image_bound=torch.tensor(bounds, dtype=torch.long).view(-1, 2), sample_id=sample_id)
