"""Vision encoders for the vision slot: packed patches [N, 3*P*P] + tgt_sizes [S, 2] -> [N, width]."""

from blocks.vision.navit_siglip import (NaViTSiglip, navit_position_ids, navit_siglip, navit_siglip_so400m,
                                        navit_siglip_tiny)
from blocks.vision.siglip_layer import SiglipEncoderLayer
from blocks.vision.timm_vit import TimmViT, timm_vit, timm_vit_tiny

__all__ = [
    "NaViTSiglip",
    "SiglipEncoderLayer",
    "TimmViT",
    "navit_position_ids",
    "navit_siglip",
    "navit_siglip_so400m",
    "navit_siglip_tiny",
    "timm_vit",
    "timm_vit_tiny",
]
