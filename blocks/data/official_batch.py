"""The official ``chat()`` + ``MiniCPMVProcessor`` batch, rebuilt on our processor (inference inputs).

Used to prove compatibility with the official processor's outputs (golden tests) and by anyone who
feeds our preprocessing into the official model code. Training batches come from
``blocks.batch.collate`` instead, which masks padding by position rather than by token id.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from blocks.data.chat import render_chat
from blocks.data.image_processing import patch_rows_to_official, split_slices
from blocks.data.processor import MiniCPMVProcessor
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record, VideoClip

OFFICIAL_IMAGE_TAG = "(<image>./</image>)"


def official_batch(processor: MiniCPMVProcessor, conversations: Sequence[Sequence[dict]],
                   temporal_ids: Sequence[Sequence[Sequence[int]] | None] | None = None,
                   system_prompt: str | None = None) -> dict:
    """What the official ``chat()`` + ``MiniCPMVProcessor`` produce for ``conversations`` (inference).

    Each message is ``{role, content}`` with content a string or a list of strings and PIL images
    (chat()'s format: items joined by ``\\n``). With ``temporal_ids[b]`` (frame groups) every image of
    conversation ``b`` is a video frame; the frames must be consecutive items of one message.

    Returns the official outputs: ``prompts`` (template text with ``(<image>./</image>)`` tags),
    ``input_ids`` [B, T] left-padded with id 0, ``attention_mask`` = ``input_ids != 0`` (the official
    quirk: real ``!`` tokens, id 0 in Qwen's vocabulary, are masked too; ``blocks.batch.collate`` masks
    by position instead), per-item ``image_bound`` shifted by the padding, ``tgt_sizes``,
    ``temporal_ids`` (one list per group, ``[-1]`` for image slices), official-layout
    ``pixel_values``, and our ``samples``.
    """
    temporal_ids = temporal_ids or [None] * len(conversations)
    samples, prompts = [], []
    for b, (messages, groups) in enumerate(zip(conversations, temporal_ids)):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(messages)
        turns, tagged, images = [], [], []
        for message in messages:
            items = [message["content"]] if isinstance(message["content"], str) else list(message["content"])
            is_image = [isinstance(item, Image.Image) for item in items]
            images += [item for item in items if isinstance(item, Image.Image)]
            tagged.append({"role": message["role"], "content": "\n".join(
                OFFICIAL_IMAGE_TAG if img else item for item, img in zip(items, is_image))})
            if groups is not None and any(is_image):
                first, last = is_image.index(True), len(is_image) - is_image[::-1].index(True)
                if not all(is_image[first:last]):
                    raise ValueError(f"conversation {b}: video frames must be consecutive items of one message")
                items[first:last] = [VIDEO_MARKER]
                is_image[first:last] = [False]
            turns.append({"role": message["role"], "content": "\n".join(
                IMAGE_MARKER if img else item for item, img in zip(items, is_image))})
        prompts.append(render_chat(tagged, add_generation_prompt=True,
                                   enable_thinking=processor.config.enable_thinking).text)
        videos = [VideoClip(frames=images, groups=[list(g) for g in groups])] if groups is not None else []
        record = Record(id=f"official-{b}", conversations=turns, images=[] if videos else images, videos=videos)
        samples.append(processor(record, mode="inference"))

    length = max(s.num_tokens for s in samples)
    input_ids = torch.zeros(len(samples), length, dtype=torch.long)
    result = {"prompts": prompts, "image_bound": [], "tgt_sizes": [], "temporal_ids": [], "pixel_values": [],
              "samples": samples}
    for b, sample in enumerate(samples):
        pad = length - sample.num_tokens
        input_ids[b, pad:] = sample.input_ids
        result["image_bound"].append(sample.image_bound + pad)
        result["tgt_sizes"].append(sample.tgt_sizes)
        firsts = torch.cumsum(sample.group_sizes, 0) - sample.group_sizes
        result["temporal_ids"].append([sample.temporal_ids[f:f + n].tolist() if sample.temporal_ids[f] >= 0 else [-1]
                                       for f, n in zip(firsts.tolist(), sample.group_sizes.tolist())])
        result["pixel_values"].append([patch_rows_to_official(rows, processor.config.patch_size)
                                       for rows in split_slices(sample.patches, sample.tgt_sizes)])
    result["input_ids"] = input_ids
    result["attention_mask"] = input_ids.ne(0)
    return result
