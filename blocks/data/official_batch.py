"""The official ``chat()`` + ``MiniCPMVProcessor`` batch, rebuilt on our processor (inference inputs).

Used to prove compatibility with the official processor's outputs (golden tests) and by anyone who
feeds our preprocessing into the official model code. Training batches come from
``blocks.batch.collate`` instead, which masks padding by position rather than by token id.

Video (frames + ``temporal_ids``) follows the official processor exactly where we can: with
``use_image_id`` on, every frame group gets ``<image_id>k</image_id>`` (k = the index of its first
frame), as the official processor writes it (our processor's ``video_image_id``). The official
processor also slices frames when ``max_slice_nums`` allows; our processor never slices a frame,
so such a call raises instead of returning a different batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from PIL import Image

from blocks.data.chat import render_chat
from blocks.data.image_processing import patch_rows_to_official, split_slices
from blocks.data.messages import record_from_messages
from blocks.data.processor import MiniCPMVProcessor
from blocks.data.slicing import plan_slices

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

    Raises:
        ValueError: a frame the official processor would slice (``max_slice_nums`` > 1 and a frame
            larger than ``scale_resolution``²), which our processor does not reproduce.
    """
    temporal_ids = temporal_ids or [None] * len(conversations)
    config = processor.config
    # The official processor treats frames like images: the same use_image_id flag names them.
    video_processor = MiniCPMVProcessor(processor.tokenizer, replace(config, video_image_id=config.use_image_id),
                                        processor.markers)
    samples, prompts = [], []
    for b, (messages, groups) in enumerate(zip(conversations, temporal_ids)):
        tagged = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else "\n".join(
                OFFICIAL_IMAGE_TAG if isinstance(item, Image.Image) else item for item in m["content"])}
            for m in messages]
        prompts.append(render_chat(tagged, add_generation_prompt=True, enable_thinking=config.enable_thinking).text)
        record = record_from_messages(messages, temporal_ids=groups, system_prompt=system_prompt or "",
                                      sample_id=f"official-{b}")
        for video in record.videos:
            sliced = [f.size for f in video.frames
                      if plan_slices(f.size, config.max_slice_nums, config.scale_resolution, config.patch_size).grid]
            if sliced:
                raise ValueError(f"conversation {b}: the official processor would slice frames of size {sliced[0]} "
                                 f"at max_slice_nums={config.max_slice_nums}; frames are never sliced here "
                                 f"(pass max_slice_nums=1, the model card's video setting)")
        samples.append((video_processor if record.videos else processor)(record, mode="inference"))

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
