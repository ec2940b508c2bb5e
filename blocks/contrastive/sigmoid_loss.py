"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training").

Every image-text pair of the batch is an independent binary decision: matching or not. Unlike the
softmax (CLIP) loss it needs no normalisation over the batch, so small batches work, and a text
that several images share (a closed vocabulary has many) can simply match all of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SigmoidContrastiveLoss(nn.Module):
    """``-mean_i sum_j log sigmoid(z_ij (t <x_i, y_j> + b))`` with z = +1 for matching pairs, -1 elsewhere.

    The temperature ``t = exp(log_scale)`` and bias ``b`` are learned; SigLIP starts them at t = 10,
    b = -10, so at first every pair looks like a non-match, matching the mostly-negative labels.
    """

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def logits(self, image: Tensor, text: Tensor) -> Tensor:
        """image [B, E], text [B, E] (unnormalised) -> pair logits [B, B] (rows: images)."""
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return image @ text.T * self.log_scale.exp() + self.bias

    def forward(self, logits: Tensor, matches: Tensor | None = None) -> Tensor:
        """Pair logits [B, B] -> scalar loss (summed over texts, averaged over images, as SigLIP).

        ``matches`` [B, B] bool marks the matching pairs; default: the diagonal only.
        """
        if matches is None:
            matches = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
        signs = 2 * matches.to(logits.dtype) - 1
        return -F.logsigmoid(signs * logits).sum() / logits.shape[0]
