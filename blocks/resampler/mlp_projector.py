"""LLaVA-style MLP projector: a drop-in baseline for the resampler slot.

Every patch feature goes through Linear(kv_dim, D) -> GELU -> Linear(D, D). Optionally each
slice/frame's patch grid is first average-pooled to a fixed ``pooled_size`` (e.g. 8x8 = 64 tokens,
the resampler's budget), so the token count no longer depends on the slice size. A group's frames
are concatenated: a group yields the sum of its frames' tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blocks.batch import check_packed_layout


class MLPProjector(nn.Module):
    """Two-layer MLP from vision width to LLM width, with optional per-frame adaptive pooling.

    Args:
        kv_dim: width of the incoming visual features.
        embed_dim: D, output width.
        pooled_size: (rows, cols) each frame's grid is average-pooled to; None keeps every patch.
            A grid smaller than the target is upsampled by adaptive pooling's overlapping bins.
    """

    def __init__(self, kv_dim: int, embed_dim: int, pooled_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.out_dim = embed_dim
        self.pooled_size = tuple(pooled_size) if pooled_size is not None else None
        self.layer_classes: tuple[type, ...] = ()
        self.mlp = nn.Sequential(nn.Linear(kv_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))

    def tokens_per_group(self, frame_sizes: list[tuple[int, int]]) -> int:
        """Tokens a group of frames with these (h, w) patch sizes yields."""
        if self.pooled_size is None:
            return sum(h * w for h, w in frame_sizes)
        return len(frame_sizes) * self.pooled_size[0] * self.pooled_size[1]

    def _pool(self, x: Tensor, tgt_sizes: Tensor) -> Tensor:
        """[N, C] patches -> [S * rows * cols, C], each slice pooled on its own grid."""
        counts = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).tolist()
        pooled = []
        for features, (h, w) in zip(x.split(counts), tgt_sizes.tolist()):
            grid = features.T.reshape(1, -1, h, w)  # [1, C, h, w]
            pooled.append(F.adaptive_avg_pool2d(grid, self.pooled_size).flatten(2)[0].T)
        return torch.cat(pooled) if pooled else x.new_zeros(0, x.shape[-1])

    def forward(self, x: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> Tensor:
        """Project packed patch features.

        Args:
            x: [N, kv_dim]; tgt_sizes: [S, 2]; temporal_ids: [S] (unused: no time embedding);
            group_sizes: [G] (sum = S).

        Returns:
            [sum over groups of ``tokens_per_group``, D], slice-major (= group order).
        """
        check_packed_layout(x, tgt_sizes, temporal_ids, group_sizes)
        if self.pooled_size is not None:
            x = self._pool(x, tgt_sizes)
        return self.mlp(x)



def mlp_projector(kv_dim: int, embed_dim: int, pooled_size: tuple[int, int] | None = (8, 8),
                  attn_backend: str = "auto") -> MLPProjector:
    """MLP projector pooled to ``pooled_size`` per frame (default 8x8 = 64 tokens, the resampler's
    budget). ``attn_backend`` is accepted so every resampler-slot builder takes the same arguments;
    this block has no attention."""
    return MLPProjector(kv_dim, embed_dim, pooled_size)


def mlp_projector_tiny(attn_backend: str = "auto") -> MLPProjector:
    """Tiny preset: kv_dim 64 -> width 64, frames pooled to 4x4 = 16 tokens (like resampler3d_tiny)."""
    return mlp_projector(64, 64, (4, 4))
