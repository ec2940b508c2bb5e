"""Fixed sine-cosine position tables, computed at use: the MiniCPM-V resampler's key positions, and the
vision tower's optional sincos start of its learned table.

The official resampler precomputes a [70, 70, D] table and a [72000, D] temporal table as
non-persistent buffers in ``__init__``. Here they are plain functions of sizes and ids evaluated on
the input's device, so nothing lands in the state_dict and a module built on the meta device (or
sharded by ZeRO-3) needs no special handling. The values equal the official float32 tables.

``sincos_1d(p, d)`` = concat(sin(p * omega), cos(p * omega)) with omega_i = 1 / 10000**(i / (d/2)),
i < d/2. The 2-D embedding of patch (row, col) is concat(sincos_1d(col, D/2), sincos_1d(row, D/2)):
the FIRST half encodes the column, as in the official code (whose variable is misleadingly named
``emb_h``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _frequencies(dim: int, device: torch.device | str | None) -> Tensor:
    """omega [dim/2] in float32, the official table's precision."""
    if dim % 2:
        raise ValueError(f"sincos embedding needs an even dim, got {dim}")
    exponent = torch.arange(dim // 2, dtype=torch.float32, device=device) / (dim / 2)
    return 1.0 / 10000.0 ** exponent


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """1-D sincos embedding of integer or float positions.

    Args:
        positions: [M] positions.
        dim: embedding width (even).

    Returns:
        [M, dim] float32 on ``positions.device``.
    """
    angles = positions.float()[:, None] * _frequencies(dim, positions.device)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d_at(rows: Tensor, cols: Tensor, dim: int) -> Tensor:
    """2-D embeddings of [M] (row, col) positions, integer or float (e.g. cell centres).

    Returns:
        [M, dim] float32: ``concat(sincos_1d(col, dim/2), sincos_1d(row, dim/2))``.
    """
    if dim % 4:
        raise ValueError(f"2-D sincos embedding needs dim divisible by 4, got {dim}")
    return torch.cat([sincos_1d(cols, dim // 2), sincos_1d(rows, dim // 2)], dim=-1)


def sincos_2d(height: int, width: int, dim: int, device: torch.device | str | None = None) -> Tensor:
    """The 2-D table for a ``height`` x ``width`` patch grid.

    Returns:
        [height, width, dim] float32; ``[r, c] = sincos_2d_at(r, c, dim)``.
    """
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    return sincos_2d_at(rows.reshape(-1), cols.reshape(-1), dim).view(height, width, dim)


def packed_sincos_2d(tgt_sizes: Tensor, dim: int) -> Tensor:
    """2-D embeddings of every patch of packed slices, slice-major then row-major.

    Args:
        tgt_sizes: [S, 2] (patch rows h, patch cols w) per slice.
        dim: embedding width (divisible by 4).

    Returns:
        [sum(h*w), dim] float32 on ``tgt_sizes.device``.
    """
    if dim % 4:
        raise ValueError(f"2-D sincos embedding needs dim divisible by 4, got {dim}")
    device = tgt_sizes.device
    heights, widths = tgt_sizes[:, 0].long(), tgt_sizes[:, 1].long()
    counts = heights * widths
    if len(tgt_sizes) == 0 or int(counts.sum()) == 0:
        return torch.zeros(0, dim, device=device)
    # Index of each patch inside its own slice, then its (row, col) from that slice's width.
    slice_start = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    local = torch.arange(int(counts.sum()), device=device) - slice_start
    patch_width = torch.repeat_interleave(widths, counts)
    rows, cols = local // patch_width, local % patch_width
    # sincos_2d_at's layout; one small 1-D table gathered twice is much cheaper than sin/cos of every patch.
    table = sincos_1d(torch.arange(int(tgt_sizes.max()), device=device), dim // 2)
    return torch.cat([table[cols], table[rows]], dim=-1)


def temporal_sincos(temporal_ids: Tensor, dim: int) -> Tensor:
    """1-D sincos embedding of frame time ids; id -1 (an image slice) gets a zero vector.

    Args:
        temporal_ids: [S] integer ids (0.1 s units in the official recipe) or -1.
        dim: embedding width (even).

    Returns:
        [S, dim] float32 on ``temporal_ids.device``.
    """
    if bool((temporal_ids < -1).any()):
        raise ValueError(f"temporal ids must be >= 0, or -1 for image slices; got {temporal_ids.tolist()}")
    embedding = sincos_1d(temporal_ids.clamp(min=0), dim)
    return embedding * (temporal_ids >= 0).to(embedding.dtype)[:, None]
