"""Resampler slot: blocks that turn packed patch features [N, kv_dim] into LLM tokens [T, D].

Every block here has ``forward(x, tgt_sizes, temporal_ids, group_sizes)``, ``tokens_per_group``,
``out_dim`` and ``layer_classes``: the MiniCPM-V 3-D/2-D perceiver resampler and two baselines.
"""

from blocks.resampler.mlp_projector import MLPProjector, mlp_projector, mlp_projector_tiny
from blocks.resampler.patch_merger import PatchMerger, patch_merger, patch_merger_tiny
from blocks.resampler.perceiver import (
    PerceiverResampler,
    resampler2d,
    resampler2d_mcpv45,
    resampler2d_tiny,
    resampler3d,
    resampler3d_mcpv45,
    resampler3d_tiny,
)

__all__ = [
    "MLPProjector", "PatchMerger", "PerceiverResampler",
    "mlp_projector", "mlp_projector_tiny", "patch_merger", "patch_merger_tiny",
    "resampler2d", "resampler2d_mcpv45", "resampler2d_tiny",
    "resampler3d", "resampler3d_mcpv45", "resampler3d_tiny",
]
