"""The slot surfaces of a MiniCPM-V-style assembly, as ``typing.Protocol``s.

A block fills a slot when it has the slot's surface; the assembly (``assemblies.mllm.MiniCPMV``) is
typed against these, not against concrete classes, so any block with the surface can be swapped in
(``vision=timm_vit``, ``resampler=mlp``). Shapes follow ``blocks.batch``: N packed patches, S slices
or frames, G visual groups, T_vis visual tokens.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class VisionSlot(Protocol):
    """``(patches [N, 3*P*P], tgt_sizes [S, 2]) -> [N, width]``: per-patch features, slices packed."""

    width: int
    patch_size: int
    layer_classes: tuple[type, ...]  # repeated layer types: FSDP / activation-checkpointing units

    def __call__(self, patches: Tensor, tgt_sizes: Tensor) -> Tensor: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


@runtime_checkable
class ResamplerSlot(Protocol):
    """``(x [N, kv_dim], tgt_sizes [S, 2], temporal_ids [S], group_sizes [G]) -> [T_vis, out_dim]``: the
    LLM tokens of every group, in group order, ``tokens_per_group`` of them per group."""

    out_dim: int
    layer_classes: tuple[type, ...]

    def __call__(self, x: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> Tensor: ...

    def tokens_per_group(self, frame_sizes: list[tuple[int, int]]) -> int: ...


@runtime_checkable
class LLMSlot(Protocol):
    """A transformers causal LM: ``inputs_embeds`` [B, T, D] in, ``.logits`` [B, T, V] out."""

    config: Any

    def __call__(self, *, inputs_embeds: Tensor, attention_mask: Tensor, **kwargs: Any) -> Any: ...

    def get_input_embeddings(self) -> nn.Module: ...

    def generate(self, **kwargs: Any) -> Tensor: ...
