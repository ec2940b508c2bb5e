"""SigLIP's text tower: token + learned position embeddings, SigLIP layers, last-token pooling.

The layers are ``blocks.vision.siglip_layer.SiglipEncoderLayer`` (bidirectional, padding masked
out of the keys); the pooled vector is the final-norm state of each text's last real token, as in
SigLIP, projected to the joint embedding size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from blocks.vision.siglip_layer import LAYER_NORM_EPS, SiglipEncoderLayer


class SiglipTextEncoder(nn.Module):
    """Token ids -> one embedding per text.

    Args:
        vocab_size: token ids must be below it.
        width: hidden size.
        depth: number of layers.
        num_heads: attention heads.
        mlp_dim: MLP hidden size.
        max_length: longest text (learned position table size).
        embed_dim: output size (the joint image-text space).
    """

    def __init__(self, vocab_size: int, width: int, depth: int, num_heads: int, mlp_dim: int,
                 max_length: int, embed_dim: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(max_length, width)
        self.layers = nn.ModuleList(SiglipEncoderLayer(width, num_heads, mlp_dim) for _ in range(depth))
        self.final_layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(width, embed_dim)
        # SigLIP's init: both tables N(0, 1/width). PyTorch's N(0, 1) token table would drown the
        # positions, and word order is what binds "red" to "top left" in "a red circle at top left and ...".
        for table in (self.token_embedding, self.position_embedding):
            nn.init.normal_(table.weight, std=width ** -0.5)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids [B, L] long, mask [B, L] bool (True = real token, each row non-empty) -> [B, embed_dim].

        Raises:
            ValueError: texts longer than ``max_length`` or a row without tokens.
        """
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"texts of {length} tokens exceed the text tower's max_length {self.max_length}")
        counts = mask.sum(1)
        if bool((counts == 0).any()):
            raise ValueError("every text needs at least one token")
        x = self.token_embedding(ids) + self.position_embedding.weight[:length]
        for layer in self.layers:
            x = layer.forward_padded(x, mask)
        x = self.final_layer_norm(x)
        return self.head(x[torch.arange(len(x), device=x.device), counts - 1])


def siglip_text_encoder_tiny(vocab_size: int = 1024, embed_dim: int = 64) -> SiglipTextEncoder:
    """Test-sized text tower: width 64, 2 layers, 2 heads, MLP 128, texts up to 64 tokens."""
    return SiglipTextEncoder(vocab_size, 64, 2, 2, 128, 64, embed_dim)
