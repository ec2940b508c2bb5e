"""One attention entry point for every block: packed variable-length segments, no padding.

Queries and keys are packed along their first axis. Segment ``i`` owns ``q_seqlens[i]`` query rows
and ``kv_seqlens[i]`` key/value rows; a query attends only to the keys of its own segment. Query
and key segment lengths may differ (cross-attention: 64 resampler queries over a slice's patches).

Backends (same semantics, chosen per call):

- ``xformers``: ``memory_efficient_attention`` with a ``BlockDiagonalMask`` (CUDA only; xformers has
  no CPU kernel).
- ``sdpa``: torch ``scaled_dot_product_attention`` on segments bucketed by (q_len, kv_len): segments
  of equal shape are gathered into one batched call, so there is no padding and no mask.
- ``eager``: the reference; a dense block-diagonal mask and an explicit softmax.
- ``auto`` (default): xformers for CUDA tensors when it imports, sdpa otherwise.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "xformers", "sdpa", "eager")
SeqLens = Sequence[int] | Tensor


@functools.cache
def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # ImportError, or a broken binary build
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``auto`` stands for on ``device``; checks explicit choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"
    if backend == "xformers" and device.type != "cuda":
        raise ValueError("the xformers backend needs CUDA tensors (xformers has no CPU kernel); use 'sdpa'")
    return backend


def _as_list(seqlens: SeqLens) -> list[int]:
    return [int(n) for n in (seqlens.tolist() if isinstance(seqlens, Tensor) else seqlens)]


def block_diagonal_mask(q_seqlens: SeqLens, kv_seqlens: SeqLens, device: torch.device | None = None) -> Tensor:
    """Bool [sum(q_seqlens), sum(kv_seqlens)]: True where a query may attend to a key."""
    q_ids = torch.repeat_interleave(torch.arange(len(_as_list(q_seqlens)), device=device),
                                    torch.tensor(_as_list(q_seqlens), device=device))
    kv_ids = torch.repeat_interleave(torch.arange(len(_as_list(kv_seqlens)), device=device),
                                     torch.tensor(_as_list(kv_seqlens), device=device))
    return q_ids[:, None] == kv_ids[None, :]


def packed_attention(q: Tensor, k: Tensor, v: Tensor, q_seqlens: SeqLens, kv_seqlens: SeqLens | None = None,
                     *, backend: str = "auto", scale: float | None = None) -> Tensor:
    """Attention over packed segments.

    Args:
        q: [Nq, H, Dh] packed queries.
        k, v: [Nk, H, Dh] packed keys and values.
        q_seqlens: query rows per segment, sum = Nq.
        kv_seqlens: key rows per segment, sum = Nk; defaults to ``q_seqlens`` (self-attention).
        backend: one of ``BACKENDS``.
        scale: softmax scale; default 1/sqrt(Dh).

    Returns:
        [Nq, H, Dh]
    """
    q_lens = _as_list(q_seqlens)
    kv_lens = q_lens if kv_seqlens is None else _as_list(kv_seqlens)
    if len(q_lens) != len(kv_lens):
        raise ValueError(f"{len(q_lens)} query segments but {len(kv_lens)} key segments")
    if sum(q_lens) != q.shape[0] or sum(kv_lens) != k.shape[0]:
        raise ValueError(f"seqlens sum to ({sum(q_lens)}, {sum(kv_lens)}) rows but q, k have "
                         f"({q.shape[0]}, {k.shape[0]})")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    backend = resolve_backend(backend, q.device)
    if backend == "xformers":
        return _xformers(q, k, v, q_lens, kv_lens, scale)
    if backend == "sdpa":
        return _sdpa_bucketed(q, k, v, q_lens, kv_lens, scale)
    return _eager(q, k, v, q_lens, kv_lens, scale)


def _eager(q: Tensor, k: Tensor, v: Tensor, q_lens: list[int], kv_lens: list[int], scale: float) -> Tensor:
    mask = block_diagonal_mask(q_lens, kv_lens, device=q.device)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1).nan_to_num(0.0)  # an empty key segment gives zeros, not NaN
    return torch.einsum("hqk,khd->qhd", weights, v.float()).to(q.dtype)


def _gather_segments(x: Tensor, offsets: list[int], length: int, segments: list[int]) -> Tensor:
    """[len(segments), length, H, Dh] rows of equal-length segments; a view when they are adjacent."""
    first, n = segments[0], len(segments)
    if segments == list(range(first, first + n)):  # adjacent segments (e.g. the frames of a video)
        return x[offsets[first]:offsets[first] + n * length].view(n, length, *x.shape[1:])
    starts = torch.tensor([offsets[s] for s in segments], device=x.device)
    rows = (starts[:, None] + torch.arange(length, device=x.device)[None, :]).reshape(-1)
    return x[rows].view(n, length, *x.shape[1:])


def _sdpa_bucketed(q: Tensor, k: Tensor, v: Tensor, q_lens: list[int], kv_lens: list[int], scale: float) -> Tensor:
    if not q_lens:
        return q.new_zeros(q.shape)
    q_offsets = [0, *torch.tensor(q_lens).cumsum(0).tolist()]
    kv_offsets = [0, *torch.tensor(kv_lens).cumsum(0).tolist()]
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for segment, shape in enumerate(zip(q_lens, kv_lens)):
        buckets[shape].append(segment)

    pieces: list[Tensor] = [q[:0]] * len(q_lens)  # per segment [lq, H, Dh], joined in segment order
    for (lq, lk), segments in buckets.items():
        if lk == 0:  # no keys: zeros, as in the eager reference
            for segment in segments:
                pieces[segment] = q.new_zeros(lq, *q.shape[1:])
            continue
        out = F.scaled_dot_product_attention(
            _gather_segments(q, q_offsets, lq, segments).transpose(1, 2),
            _gather_segments(k, kv_offsets, lk, segments).transpose(1, 2),
            _gather_segments(v, kv_offsets, lk, segments).transpose(1, 2), scale=scale).transpose(1, 2)
        if len(buckets) == 1:  # one shape, all segments adjacent: already in packed order
            return out.reshape(q.shape)
        for j, segment in enumerate(segments):
            pieces[segment] = out[j]
    return torch.cat(pieces)


def xformers_block_diagonal_mask(q_lens: Sequence[int], kv_lens: Sequence[int], device: torch.device):
    """xformers' ``BlockDiagonalMask`` for the segments (imported lazily)."""
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    return BlockDiagonalMask.from_seqlens(q_seqlen=list(q_lens), kv_seqlen=list(kv_lens), device=device)


def _xformers(q: Tensor, k: Tensor, v: Tensor, q_lens: list[int], kv_lens: list[int], scale: float) -> Tensor:
    import xformers.ops as xops

    bias = xformers_block_diagonal_mask(q_lens, kv_lens, device=q.device)
    return xops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, scale=scale)[0]
