"""Contrastive image-text pre-training parts (SigLIP): the text tower and the pairwise sigmoid loss.

MiniCPM-V starts from a SigLIP vision tower pre-trained this way; a tiny model trained from scratch
gets the same kind of start from these blocks (``assemblies.contrastive``).
"""

from blocks.contrastive.sigmoid_loss import SigmoidContrastiveLoss
from blocks.contrastive.text_encoder import SiglipTextEncoder, siglip_text_encoder_tiny

__all__ = ["SigmoidContrastiveLoss", "SiglipTextEncoder", "siglip_text_encoder_tiny"]
