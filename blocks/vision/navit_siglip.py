"""SigLIP NaViT vision encoder of MiniCPM-V 4.5, running packed over slices of different sizes.

Input is the packed visual batch (``blocks.batch``): ``patches`` [N, 3*P*P], every patch of every
slice/frame, slice-major, row-major inside a slice, each row flattened in (channel, y, x) order;
``tgt_sizes`` [S, 2] = (patch rows h, patch cols w) per slice. Output is [N, width], row for row.

Parameter names equal the official ``SiglipVisionTransformer`` (so a ``vpm.``-prefixed slice of the
released checkpoint loads with ``strict=True``):

- ``embeddings.patch_embedding``: Conv2d(3, D, P, stride P), applied as a linear map on patch rows
  with the kernel flattened (same numbers, no image re-assembly);
- ``embeddings.position_embedding``: Embedding(G*G, D) over a G x G (70 x 70) grid. A slice of
  h x w patches is stretched over the whole grid: row i gets bucket(i/h), column j bucket(j/w);
- ``encoder.layers.{i}`` (see ``siglip_layer``), ``post_layernorm``.

The official tower pads every slice to the longest and masks keys; ``forward_padded`` keeps that
layout as a reference (tests, ``assemblies/benchmarks/vision_packing.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from blocks.positions import sincos_2d
from blocks.vision.siglip_layer import LAYER_NORM_EPS, SiglipEncoderLayer

# Std of a standard normal truncated to [-2, 2].
TRUNCATED_NORMAL_STD = 0.87962566103423978
PositionInit = Literal["normal", "sincos"]
POSITION_INITS: tuple[PositionInit, ...] = ("normal", "sincos")


@functools.lru_cache(maxsize=512)
def _grid_buckets(n: int, grid: int) -> Tensor:
    """Grid bucket [n] of each of n patch rows (or cols), bit-exact with the official arithmetic.

    The official code divides by an int32 tensor, so the step is the float32 1/n, and the coords and
    boundaries are float32 ``arange``s; boundaries hit by i/n exactly (e.g. n=35) depend on that.
    """
    step = (1 / torch.tensor(n, dtype=torch.int32)).item()
    coords = torch.arange(0, 1 - 1e-6, step)
    boundaries = torch.arange(1 / grid, 1.0, 1 / grid)
    return torch.bucketize(coords, boundaries, right=True)


def navit_position_ids(tgt_sizes: Tensor, grid: int = 70) -> Tensor:
    """Position-table ids [sum(h*w)] of the packed patches: bucket_h * grid + bucket_w per patch."""
    ids = [(_grid_buckets(h, grid)[:, None] * grid + _grid_buckets(w, grid)[None, :]).flatten()
           for h, w in tgt_sizes.tolist()]
    return torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)


class SiglipNaViTEmbeddings(nn.Module):
    """Patch embedding + stretched 2-D position embedding, on packed patch rows."""

    def __init__(self, width: int, patch_size: int = 14, position_grid: int = 70, channels: int = 3,
                 position_init: PositionInit = "normal") -> None:
        super().__init__()
        self.patch_size = patch_size
        self.position_grid = position_grid
        self.position_init = position_init
        self.patch_embedding = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size)
        self.position_embedding = nn.Embedding(position_grid * position_grid, width)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """LeCun-normal patch kernel (N(0, 1/fan_in) truncated at 2 sigma, sigma corrected for the
        truncation), zero bias; the position table as ``position_init`` says (``NaViTSiglip.init_weights``)."""
        patch = self.patch_embedding
        sigma = patch.weight[0].numel() ** -0.5 / TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(patch.weight, std=sigma, a=-2 * sigma, b=2 * sigma)
        nn.init.zeros_(patch.bias)
        position = self.position_embedding.weight
        if self.position_init == "sincos":
            grid = self.position_grid
            position.copy_(sincos_2d(grid, grid, position.shape[1]).reshape(grid * grid, -1))
        else:
            nn.init.normal_(position, std=position.shape[1] ** -0.5)

    def forward(self, patches: Tensor, tgt_sizes: Tensor) -> Tensor:
        """patches [N, C*P*P], tgt_sizes [S, 2] -> [N, D]."""
        weight = self.patch_embedding.weight
        x = F.linear(patches.to(weight.dtype), weight.flatten(1), self.patch_embedding.bias)
        position_ids = navit_position_ids(tgt_sizes.cpu(), self.position_grid).to(patches.device)
        return x + self.position_embedding(position_ids)


class SiglipEncoder(nn.Module):
    """The stack of layers (``encoder.layers.{i}``), with optional per-layer activation checkpointing."""

    def __init__(self, layers: Sequence[SiglipEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.grad_checkpointing = False

    def forward(self, x: Tensor, seqlens: list[int]) -> Tensor:
        """x [N, D] packed over ``seqlens`` -> [N, D]."""
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, seqlens, use_reentrant=False) if recompute else layer(x, seqlens)
        return x


class NaViTSiglip(nn.Module):
    """The vision slot: packed patches + tgt_sizes -> per-patch features.

    Args:
        position_init: how a from-scratch position table starts (loaded checkpoints overwrite it):
            ``"normal"`` (SigLIP's N(0, 1/D)) or ``"sincos"`` (see ``init_weights``).

    Attributes:
        width: feature size D.
        patch_size: P (14).
        layer_classes: repeated layer types (FSDP wrapping / activation checkpointing).
    """

    def __init__(self, width: int, depth: int, num_heads: int, mlp_dim: int, patch_size: int = 14,
                 position_grid: int = 70, attn_backend: str = "auto", position_init: PositionInit = "normal") -> None:
        super().__init__()
        if position_init not in POSITION_INITS:
            raise ValueError(f"position_init must be one of {POSITION_INITS}, got {position_init!r}")
        self.width = width
        self.position_init = position_init
        self.patch_size = patch_size
        self.layer_classes: tuple[type, ...] = (SiglipEncoderLayer,)
        self.embeddings = SiglipNaViTEmbeddings(width, patch_size, position_grid, position_init=position_init)
        self.encoder = SiglipEncoder([SiglipEncoderLayer(width, num_heads, mlp_dim, attn_backend)
                                      for _ in range(depth)])
        self.post_layernorm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """SigLIP's own initialisation (as in its big_vision / HF code), for training from scratch.

        PyTorch's defaults give the position table N(0, 1) rows, several times larger than what a
        patch of thin dark text adds to the patch embedding, so a from-scratch tower would first learn
        to ignore the pixels (docs/tiny_recipe.md, "Tower init").

        ``position_init="sincos"`` starts the table as the 2-D sincos grid instead (the table the
        resampler adds to its keys): values in [-1, 1], about as large as a patch's embedding, so a
        shape's place is in the features the queries average (docs/tiny_recipe.md, "Position").

        Each part has its own ``reset_parameters`` (embeddings, every layer, the final norm), so a
        tower created on the meta device is materialised one FSDP unit at a time with the same init.
        """
        self.embeddings.reset_parameters()
        for layer in self.encoder.layers:
            layer.reset_parameters()
        self.post_layernorm.reset_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer's activations in backward (torch.utils.checkpoint, non-reentrant)."""
        self.encoder.grad_checkpointing = enable

    def _check(self, patches: Tensor, tgt_sizes: Tensor) -> list[int]:
        patch_dim = 3 * self.patch_size ** 2
        if patches.dim() != 2 or patches.shape[1] != patch_dim:
            raise ValueError(f"patches must be [N, {patch_dim}], got {tuple(patches.shape)}")
        if tgt_sizes.dim() != 2 or tgt_sizes.shape[1] != 2:
            raise ValueError(f"tgt_sizes must be [S, 2], got {tuple(tgt_sizes.shape)}")
        seqlens = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).tolist()
        if sum(seqlens) != patches.shape[0] or any(n <= 0 for n in seqlens):
            raise ValueError(f"tgt_sizes {tgt_sizes.tolist()} describe {sum(seqlens)} patches "
                             f"but patches has {patches.shape[0]} rows")
        return seqlens

    def forward(self, patches: Tensor, tgt_sizes: Tensor) -> Tensor:
        """patches [N, 3*P*P], tgt_sizes [S, 2] -> [N, width]; slices never see each other."""
        seqlens = self._check(patches, tgt_sizes)
        if not seqlens:
            return patches.new_zeros(0, self.width, dtype=self.post_layernorm.weight.dtype)
        x = self.encoder(self.embeddings(patches, tgt_sizes), seqlens)
        return self.post_layernorm(x)

    def forward_padded(self, patches: Tensor, tgt_sizes: Tensor) -> Tensor:
        """Reference path, same result as ``forward``: pad slices to the longest, mask keys, unpad.

        This is the official tower's layout ([S, max h*w, D] with a key-padding mask); the padded
        rows cost full compute and are dropped at the end.
        """
        seqlens = self._check(patches, tgt_sizes)
        if not seqlens:
            return patches.new_zeros(0, self.width, dtype=self.post_layernorm.weight.dtype)
        x = self.embeddings(patches, tgt_sizes)
        lengths = torch.tensor(seqlens, device=x.device)
        key_mask = torch.arange(int(lengths.max()), device=x.device)[None, :] < lengths[:, None]  # [S, L]
        padded = x.new_zeros(*key_mask.shape, self.width)
        padded[key_mask] = x  # row-major over (slice, position) = the packing order
        for layer in self.encoder.layers:
            padded = layer.forward_padded(padded, key_mask)
        return self.post_layernorm(padded[key_mask])


def navit_siglip(width: int, depth: int, num_heads: int, mlp_dim: int, patch_size: int = 14,
                 position_grid: int = 70, attn_backend: str = "auto",
                 position_init: PositionInit = "normal") -> NaViTSiglip:
    """A NaViT SigLIP encoder of the given size (random init)."""
    return NaViTSiglip(width, depth, num_heads, mlp_dim, patch_size, position_grid, attn_backend, position_init)


def navit_siglip_so400m(attn_backend: str = "auto") -> NaViTSiglip:
    """MiniCPM-V 4.5's SigLIP-so400m/14 tower: 27 layers, width 1152, 16 heads, MLP 4304 (417,792,240 params)."""
    return navit_siglip(1152, 27, 16, 4304, attn_backend=attn_backend)


def navit_siglip_tiny(attn_backend: str = "auto") -> NaViTSiglip:
    """Test-sized tower: width 64, 2 layers, 2 heads, MLP 128, patch 14, 70 x 70 position grid."""
    return navit_siglip(64, 2, 2, 128, attn_backend=attn_backend)
