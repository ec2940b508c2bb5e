"""SigLIP-style contrastive pre-training of an assembly's vision tower and resampler.

MiniCPM-V 4.5 starts from a SigLIP tower that contrastive image-text training on web data already
taught to see. A tiny tower trained from scratch has no such start, and learning to see only
through a randomly initialised LLM is slow (docs/tiny_recipe.md, "Stage0"). This wrapper trains
``vpm`` + ``resampler`` against a small text tower on (image, caption) pairs first; each step costs
a fraction of an LLM step (no LLM, 64-token texts).

The text of a sample is its supervised (assistant) tokens, so any corpus the processor reads works:
the captions corpus's ``dense_caption`` task names every shape with its place in the image, and the
documents' ``doc_ocr`` task gives the boxed word. Samples with the same text match each other, so a
closed vocabulary (24 words) does not set identical captions against each other as non-matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from assemblies.mllm import encode_visual
from blocks.batch import IGNORE_INDEX, MultimodalBatch
from blocks.contrastive import SigmoidContrastiveLoss, SiglipTextEncoder

# Trainable heads that an objective adds next to the assembly's slots, by attribute name (stage
# configs list them in ``trainable`` and ``lr``); dropped when their stage ends.
OBJECTIVE_HEADS = ("contrastive",)


def _refuse_empty(batch: MultimodalBatch, counts: Tensor, what: str) -> None:
    for row in torch.nonzero(counts == 0).flatten().tolist():
        raise ValueError(f"sample {batch.sample_name(row)!r}: contrastive pre-training needs {what}")


@dataclass
class ContrastiveOutput:
    """``loss`` (scalar), the pair ``logits`` [B, B] (rows: images, columns: texts) and ``matches``
    [B, B] bool: the pairs whose texts are identical (the diagonal and any duplicate captions)."""

    loss: Tensor
    logits: Tensor
    matches: Tensor


def captions(batch: MultimodalBatch) -> tuple[Tensor, Tensor]:
    """Each sample's supervised tokens, left-aligned: ids [B, T] (0-padded) and mask [B, T].

    Raises:
        ValueError: when the batch has no labels or a sample has no supervised tokens (names it).
    """
    if batch.labels is None:
        raise ValueError("contrastive pre-training needs labels: the caption is the supervised text")
    keep = batch.labels != IGNORE_INDEX
    lengths = keep.sum(1)
    _refuse_empty(batch, lengths, "a caption (supervised tokens)")
    ids = batch.input_ids.new_zeros(batch.batch_size, int(lengths.max()))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for row in range(batch.batch_size):
        ids[row, :lengths[row]], mask[row, :lengths[row]] = batch.input_ids[row][keep[row]], True
    return ids, mask


def caption_matches(ids: Tensor, mask: Tensor) -> Tensor:
    """[B, B] bool from ``captions``: sample i's text equals sample j's (True on the diagonal)."""
    lengths = mask.sum(1)
    return (ids[:, None] == ids[None]).all(-1) & (lengths[:, None] == lengths[None])


class ContrastiveHead(nn.Module):
    """Everything the contrastive objective adds to the assembly, dropped after pre-training.

    The image embedding is a linear map of the concatenated resampler tokens of a group (not their
    mean), so each query keeps its own part of the image, as it will when the LLM reads the tokens.
    """

    def __init__(self, image_dim: int, text: SiglipTextEncoder, embed_dim: int) -> None:
        super().__init__()
        self.image_projection = nn.Linear(image_dim, embed_dim)
        self.text = text
        self.loss = SigmoidContrastiveLoss()


class ContrastivePretrainer(nn.Module):
    """``forward(batch) -> ContrastiveOutput`` over an assembly's ``vpm`` and ``resampler``.

    Holds the assembly's own ``vpm`` and ``resampler`` modules (trained in place) and a
    ``contrastive`` head; the LLM is not part of it. Stage configs name these three blocks.

    Args:
        model: the assembly (``vpm``, ``resampler``; the resampler yields a fixed token count per group).
        vocab_size: the tokenizer's size (the text tower's embedding table).
        width, depth, num_heads, mlp_dim, max_text_length: the text tower.
        embed_dim: size of the joint image-text space.
    """

    def __init__(self, model: nn.Module, vocab_size: int, width: int = 64, depth: int = 2, num_heads: int = 2,
                 mlp_dim: int = 128, max_text_length: int = 64, embed_dim: int = 64) -> None:
        super().__init__()
        self.vpm, self.resampler = model.vpm, model.resampler
        # Probed with a one-patch frame: a fixed-count resampler (perceiver, pooled MLP) answers its
        # count; one whose count follows the frame size is caught in embed_images with a clear error.
        self.tokens_per_group = self.resampler.tokens_per_group([(1, 1)])
        text = SiglipTextEncoder(vocab_size, width, depth, num_heads, mlp_dim, max_text_length, embed_dim)
        self.contrastive = ContrastiveHead(self.tokens_per_group * self.resampler.out_dim, text, embed_dim)

    def embed_images(self, batch: MultimodalBatch) -> Tensor:
        """[B, embed_dim]: the mean over each sample's visual groups of their projected tokens."""
        rows = batch.image_bound[:, 0]
        counts = torch.bincount(rows, minlength=batch.batch_size)
        _refuse_empty(batch, counts, "an image")
        tokens = encode_visual(self.vpm, self.resampler, batch)
        groups = batch.group_sizes.numel()
        if tokens.shape[0] != groups * self.tokens_per_group:
            raise ValueError(f"contrastive pre-training needs {self.tokens_per_group} tokens per visual group; "
                             f"the resampler gave {tokens.shape[0]} for {groups} groups")
        per_group = self.contrastive.image_projection(tokens.reshape(groups, -1))
        summed = per_group.new_zeros(batch.batch_size, per_group.shape[1]).index_add(0, rows, per_group)
        return summed / counts[:, None]

    def embed_texts(self, ids: Tensor, mask: Tensor) -> Tensor:
        """[B, embed_dim] from ``captions`` (ids, mask [B, T]), cut to the text tower's length."""
        limit = self.contrastive.text.max_length
        return self.contrastive.text(ids[:, :limit], mask[:, :limit])

    def forward(self, batch: MultimodalBatch) -> ContrastiveOutput:
        """Raises ValueError when a sample has no image or no caption tokens (names the sample)."""
        ids, mask = captions(batch)
        matches = caption_matches(ids, mask)
        logits = self.contrastive.loss.logits(self.embed_images(batch), self.embed_texts(ids, mask))
        return ContrastiveOutput(loss=self.contrastive.loss(logits, matches), logits=logits, matches=matches)
