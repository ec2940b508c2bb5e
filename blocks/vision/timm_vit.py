"""Any timm Vision Transformer in the vision slot (packed patches + tgt_sizes -> [N, width]).

The ViT is built with ``timm.create_model(name, pretrained=False, dynamic_img_size=True, ...)`` (no
download). Slices of equal (h, w) are re-assembled into images and run as one batch; timm resamples
its absolute position table to each (h, w). Prefix tokens (class, registers) are dropped, so every
patch row maps to one output row, exactly like ``NaViTSiglip``.

Attention: timm's own attention runs inside each same-size bucket, which is what the ``sdpa``
backend of ``blocks.attention`` does too (no padding, no cross-slice attention), so it does not go
through ``packed_attention``. ``attn_backend="eager"`` switches timm to its explicit-softmax path;
``xformers`` is refused (timm has no block-diagonal variable-length path).
"""

from __future__ import annotations

from collections import defaultdict

import timm
import torch
from torch import Tensor, nn


class TimmViT(nn.Module):
    """Wraps a timm ViT (``model``) for packed input.

    Attributes:
        width: feature size (``model.num_features``).
        patch_size: the ViT's patch size (must be square).
        layer_classes: the type of the ViT's repeated blocks.
    """

    def __init__(self, model: nn.Module, attn_backend: str = "auto") -> None:
        super().__init__()
        if attn_backend not in ("auto", "sdpa", "eager"):
            raise ValueError(f"timm ViTs support attn_backend 'auto', 'sdpa' or 'eager', not {attn_backend!r}")
        ph, pw = model.patch_embed.patch_size
        if ph != pw:
            raise ValueError(f"non-square patches {ph}x{pw} are not supported")
        if not getattr(model, "dynamic_img_size", False):
            raise ValueError("build the timm model with dynamic_img_size=True (slices have many sizes)")
        self.model = model
        self.width = int(model.num_features)
        self.patch_size = int(ph)
        self.layer_classes: tuple[type, ...] = (type(model.blocks[0]),)
        if attn_backend == "eager":
            for module in model.modules():
                if hasattr(module, "fused_attn"):
                    module.fused_attn = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, patches: Tensor, tgt_sizes: Tensor) -> Tensor:
        """patches [N, 3*P*P] ((c, y, x) per row), tgt_sizes [S, 2] -> [N, width]."""
        p = self.patch_size
        if patches.dim() != 2 or patches.shape[1] != 3 * p * p:
            raise ValueError(f"patches must be [N, {3 * p * p}], got {tuple(patches.shape)}")
        sizes = [tuple(s) for s in tgt_sizes.tolist()]
        seqlens = [h * w for h, w in sizes]
        if sum(seqlens) != patches.shape[0] or any(n <= 0 for n in seqlens):
            raise ValueError(f"tgt_sizes {sizes} describe {sum(seqlens)} patches but patches has "
                             f"{patches.shape[0]} rows")
        offsets = torch.tensor([0] + seqlens[:-1]).cumsum(0).tolist()
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            buckets[size].append(index)

        dtype = self.model.patch_embed.proj.weight.dtype
        out = patches.new_zeros(patches.shape[0], self.width, dtype=dtype)
        for (h, w), slices in buckets.items():
            rows = torch.cat([torch.arange(offsets[s], offsets[s] + h * w) for s in slices]).to(patches.device)
            images = (patches[rows].to(dtype).view(len(slices), h, w, 3, p, p)
                      .permute(0, 3, 1, 4, 2, 5).reshape(len(slices), 3, h * p, w * p))
            tokens = self.model.forward_features(images)[:, self.model.num_prefix_tokens:]
            out = out.index_copy(0, rows, tokens.reshape(-1, self.width))
        return out


def timm_vit(name: str, patch_size: int = 14, img_size: int = 224, attn_backend: str = "auto",
             **timm_kwargs) -> TimmViT:
    """``timm.create_model(name)`` (random init, no download) as a packed vision block.

    Args:
        name: a timm ViT architecture, e.g. ``"vit_base_patch16_224"``.
        patch_size: patch size to build it with (14 to match the MiniCPM-V slicing).
        img_size: the size its position table is made for (resampled per slice size at run time).
        attn_backend: ``auto``/``sdpa`` (fused) or ``eager``.
        **timm_kwargs: more ``create_model`` arguments (depth, embed_dim, ...).
    """
    model = timm.create_model(name, pretrained=False, patch_size=patch_size, img_size=img_size,
                              num_classes=0, dynamic_img_size=True, **timm_kwargs)
    return TimmViT(model, attn_backend)


def timm_vit_tiny(attn_backend: str = "auto") -> TimmViT:
    """Test-sized timm ViT: width 64, 2 blocks, 2 heads, MLP 128, patch 14 (a shrunk ``vit_tiny_patch16_224``)."""
    return timm_vit("vit_tiny_patch16_224", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0,
                    attn_backend=attn_backend)
