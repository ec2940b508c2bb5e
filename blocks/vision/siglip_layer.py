"""One SigLIP transformer layer (pre-norm attention + gelu-tanh MLP), packed or padded.

Parameter names follow the official MiniCPM-V / HF SigLIP checkpoint:
``self_attn.{q,k,v,out}_proj``, ``layer_norm1``, ``mlp.fc1``, ``mlp.fc2``, ``layer_norm2``.

Two entry points with the same weights:

- ``forward(x [N, D], seqlens)``: packed; each slice attends only to itself through
  ``blocks.attention.packed_attention`` (no padding anywhere).
- ``forward_padded(x [B, L, D], key_mask [B, L])``: the official layout, every slice padded to the
  longest with a key-padding mask. Kept as the reference for tests and the packing benchmark.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blocks.attention import packed_attention

LAYER_NORM_EPS = 1e-6


class SiglipAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (official names)."""

    def __init__(self, width: int, num_heads: int, attn_backend: str = "auto") -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.attn_backend = attn_backend
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape = (*x.shape[:-1], self.num_heads, self.head_dim)
        return self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)

    def forward(self, x: Tensor, seqlens: Sequence[int]) -> Tensor:
        """x [N, D] packed, ``seqlens`` rows per slice -> [N, D]."""
        q, k, v = self._heads(x)
        out = packed_attention(q, k, v, seqlens, backend=self.attn_backend)
        return self.out_proj(out.reshape(x.shape))

    def forward_padded(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """x [B, L, D], key_mask bool [B, L] (True = real patch) -> [B, L, D].

        Padded query rows are computed too (they attend to the real keys), as in the official tower.
        """
        q, k, v = (t.transpose(1, 2) for t in self._heads(x))  # [B, H, L, Dh]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


class SiglipMLP(nn.Module):
    """fc1 -> gelu (tanh approximation, SigLIP's ``gelu_pytorch_tanh``) -> fc2."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, width: int, num_heads: int, mlp_dim: int, attn_backend: str = "auto") -> None:
        super().__init__()
        self.self_attn = SiglipAttention(width, num_heads, attn_backend)
        self.layer_norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = SiglipMLP(width, mlp_dim)
        self.layer_norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """SigLIP's initialisation of a layer (big_vision / HF): xavier-uniform projections with zero
        biases, xavier-uniform MLP weights with N(0, 1e-6) biases, unit LayerNorms. Also what
        materialises a layer created on the meta device (``assemblies.training.sharding``)."""
        attn, mlp = self.self_attn, self.mlp
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)
        for fc in (mlp.fc1, mlp.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)
        for norm in (self.layer_norm1, self.layer_norm2):
            norm.reset_parameters()

    def _residual_block(self, x: Tensor, attend: Callable[[Tensor], Tensor]) -> Tensor:
        x = x + attend(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))

    def forward(self, x: Tensor, seqlens: Sequence[int]) -> Tensor:
        """x [N, D] packed over slices of ``seqlens`` rows -> [N, D]."""
        return self._residual_block(x, lambda h: self.self_attn(h, seqlens))

    def forward_padded(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """x [B, L, D] with key_mask [B, L] -> [B, L, D]."""
        return self._residual_block(x, lambda h: self.self_attn.forward_padded(h, key_mask))
