"""Qwen2.5-VL-style patch merger: a drop-in baseline for the resampler slot.

Each patch feature is layer-normed, then 2 x 2 neighbouring patches of 2 consecutive frames are
concatenated (8 patches -> one token of width 8*kv_dim) and an MLP maps that to the LLM width D.
Compression is a fixed 8x in tokens, so the token count grows with slice size and frame count,
unlike the resampler's fixed budget. Odd grid sizes are padded by repeating the last row/column;
an odd frame count (an image slice is a group of one frame) repeats the last frame, as Qwen2.5-VL
duplicates images along time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blocks.batch import check_packed_layout

SPATIAL = 2   # patches merged along each grid axis
TEMPORAL = 2  # consecutive frames merged


def _shared_size(frame_sizes: list, where: str) -> tuple[int, int]:
    """The (h, w) all frames of a group share; frames are merged pairwise, so sizes must agree."""
    if not frame_sizes or any(tuple(size) != tuple(frame_sizes[0]) for size in frame_sizes):
        raise ValueError(f"patch merger ({where}): a group needs >= 1 frames of one size, got {frame_sizes}")
    return tuple(frame_sizes[0])


class PatchMerger(nn.Module):
    """LayerNorm + (2 frames x 2 x 2 patches) concatenation + MLP.

    Args:
        kv_dim: width of the incoming visual features.
        embed_dim: D, output width.
    """

    def __init__(self, kv_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.out_dim = embed_dim
        self.layer_classes: tuple[type, ...] = ()
        merged = kv_dim * SPATIAL * SPATIAL * TEMPORAL
        self.ln_q = nn.LayerNorm(kv_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(merged, merged), nn.GELU(), nn.Linear(merged, embed_dim))

    def tokens_per_group(self, frame_sizes: list[tuple[int, int]]) -> int:
        """Tokens a group of equally sized frames yields: ceil(f/2) * ceil(h/2) * ceil(w/2)."""
        h, w = _shared_size([tuple(size) for size in frame_sizes], "tokens_per_group")
        return -(-len(frame_sizes) // TEMPORAL) * -(-h // SPATIAL) * -(-w // SPATIAL)

    @staticmethod
    def _merge_group(frames: Tensor) -> Tensor:
        """[f, h, w, C] -> [ceil(f/2) * ceil(h/2) * ceil(w/2), 8C], tokens in (time, row, col) order."""
        if frames.shape[0] % TEMPORAL:
            frames = torch.cat([frames, frames[-1:]])
        f, h, w, c = frames.shape
        grid = F.pad(frames.permute(0, 3, 1, 2), (0, w % SPATIAL, 0, h % SPATIAL), mode="replicate")
        grid = grid.permute(0, 2, 3, 1)  # [f, h', w', C]
        h2, w2 = grid.shape[1] // SPATIAL, grid.shape[2] // SPATIAL
        blocks = grid.reshape(f // TEMPORAL, TEMPORAL, h2, SPATIAL, w2, SPATIAL, c)
        return blocks.permute(0, 2, 4, 1, 3, 5, 6).reshape(-1, TEMPORAL * SPATIAL * SPATIAL * c)

    def forward(self, x: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> Tensor:
        """Merge and project packed patch features.

        Args:
            x: [N, kv_dim]; tgt_sizes: [S, 2]; temporal_ids: [S] (unused: order within the group
            carries time); group_sizes: [G] (sum = S), frames of a group must share (h, w).

        Returns:
            [sum over groups of ``tokens_per_group``, D] in group order.
        """
        check_packed_layout(x, tgt_sizes, temporal_ids, group_sizes)
        sizes = tgt_sizes.tolist()
        slices = self.ln_q(x).split([h * w for h, w in sizes])
        merged, first = [], 0
        for frame_count in group_sizes.tolist():
            h, w = _shared_size(sizes[first:first + frame_count], f"slices {first}..{first + frame_count - 1}")
            merged.append(self._merge_group(torch.stack(slices[first:first + frame_count]).view(frame_count, h, w, -1)))
            first += frame_count
        if not merged:
            return x.new_zeros(0, self.out_dim)
        return self.mlp(torch.cat(merged))


def patch_merger(kv_dim: int, embed_dim: int, attn_backend: str = "auto") -> PatchMerger:
    """Patch merger kv_dim -> embed_dim. ``attn_backend`` is accepted so every resampler-slot builder
    takes the same arguments; this block has no attention."""
    return PatchMerger(kv_dim, embed_dim)


def patch_merger_tiny(attn_backend: str = "auto") -> PatchMerger:
    """Tiny preset: kv_dim 64 -> width 64."""
    return patch_merger(64, 64)
