"""MiniCPM-V: vision encoder -> resampler -> visual tokens scattered into the LLM's text embeddings.

The three slots are plain modules named exactly ``vpm``, ``resampler`` and ``llm`` so the state_dict
keys equal the official checkpoint's (``vpm.embeddings.patch_embedding.weight``,
``resampler.attn.in_proj_weight``, ``llm.model.layers.0.self_attn.q_proj.weight``, ...).
The assembly is typed against the slot surfaces of ``blocks/slots.py`` (``VisionSlot``,
``ResamplerSlot``, ``LLMSlot``), so any block with the surface fills its slot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blocks.batch import IGNORE_INDEX, MultimodalBatch, position_ids_from_mask
from blocks.generation import Completion, GenerationConfig, generate, opens_thinking
from blocks.llm import layer_classes as llm_layer_classes
from blocks.slots import LLMSlot, ResamplerSlot, VisionSlot

SLOTS = ("vpm", "resampler", "llm")


def visual_chunks(group_sizes: list[int], max_frames: int) -> list[tuple[int, int]]:
    """[first, end) group ranges holding at most ``max_frames`` slices each (a longer group is one chunk)."""
    chunks, first, frames = [], 0, 0
    for group, size in enumerate(group_sizes):
        if frames and frames + size > max_frames:
            chunks.append((first, group))
            first, frames = group, 0
        frames += size
    return chunks + [(first, len(group_sizes))] if group_sizes else chunks


def encode_visual(vpm: VisionSlot, resampler: ResamplerSlot, batch: MultimodalBatch,
                  chunk_frames: int | None = None) -> Tensor:
    """The vision slots alone: packed visual tokens [T_vis, D] of every group in ``batch``, in group order.

    ``chunk_frames``: encode whole groups at most this many slices/frames at a time, so the tower's
    and the resampler's activations are one chunk's, not the whole video's (the official tower's
    ``vision_batch_size`` does this for the tower alone). Slices and groups are independent in both
    slots, so the tokens are the same.
    """
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1 or None, got {chunk_frames}")
    dtype = next(vpm.parameters()).dtype
    if chunk_frames is None or batch.num_groups == 0:
        features = vpm(batch.patches.to(dtype), batch.tgt_sizes)
        return resampler(features, batch.tgt_sizes, batch.temporal_ids, batch.group_sizes)
    slice_ends = torch.tensor([0, *batch.group_sizes.tolist()]).cumsum(0).tolist()
    row_ends = [0, *(batch.tgt_sizes[:, 0] * batch.tgt_sizes[:, 1]).cumsum(0).tolist()]
    tokens = []
    for first, end in visual_chunks(batch.group_sizes.tolist(), chunk_frames):
        slices = slice(slice_ends[first], slice_ends[end])
        tgt_sizes = batch.tgt_sizes[slices]
        features = vpm(batch.patches[row_ends[slices.start]:row_ends[slices.stop]].to(dtype), tgt_sizes)
        tokens.append(resampler(features, tgt_sizes, batch.temporal_ids[slices], batch.group_sizes[first:end]))
    return torch.cat(tokens)


@dataclass
class MLLMOutput:
    """``loss``: mean next-token cross-entropy over labelled tokens (None without labels);
    ``logits`` [B, T, V]; ``num_loss_tokens``: labelled tokens the mean ran over."""

    loss: Tensor | None
    logits: Tensor
    num_loss_tokens: int


def next_token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Mean cross-entropy of logits[:, t] against labels[:, t+1] over labels != IGNORE_INDEX.

    Computed in fp32. With no labelled token the loss is an exact 0 that still carries the graph.
    """
    targets = labels[:, 1:].reshape(-1)
    count = int((targets != IGNORE_INDEX).sum())
    summed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets,
                             ignore_index=IGNORE_INDEX, reduction="sum")
    return summed / max(count, 1), count


class MiniCPMV(nn.Module):
    """The assembled multimodal LLM.

    Args:
        vpm: the vision slot's module.
        resampler: the resampler slot's module; its ``out_dim`` must equal the LLM hidden size.
        llm: the LLM slot's module (a transformers causal LM).
        visual_chunk_frames: encode the visual input at most this many slices/frames at a time
            (``encode_visual``'s ``chunk_frames``; None: all at once). Same tokens, less memory.

    Raises:
        TypeError: a module lacks its slot's surface.
    """

    def __init__(self, vpm: VisionSlot, resampler: ResamplerSlot, llm: LLMSlot,
                 visual_chunk_frames: int | None = None) -> None:
        super().__init__()
        for slot, module, surface in (("vpm", vpm, VisionSlot), ("resampler", resampler, ResamplerSlot),
                                      ("llm", llm, LLMSlot)):
            if not isinstance(module, surface):
                raise TypeError(f"{slot}: {type(module).__name__} lacks the {surface.__name__} surface "
                                "(blocks/slots.py)")
        hidden = llm.get_input_embeddings().embedding_dim
        if resampler.out_dim != hidden:
            raise ValueError(f"resampler.out_dim={resampler.out_dim} but the LLM hidden size is {hidden}")
        self.vpm = vpm
        self.resampler = resampler
        self.llm = llm
        self.visual_chunk_frames = visual_chunk_frames

    @property
    def layer_classes(self) -> tuple[type, ...]:
        """Repeated layer types of all blocks (FSDP auto-wrap / activation checkpointing units)."""
        classes = (*self.vpm.layer_classes, *self.resampler.layer_classes, *llm_layer_classes(self.llm))
        return tuple(dict.fromkeys(classes))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in the vision tower and the LLM decoder layers."""
        self.vpm.set_grad_checkpointing(enable)
        if not hasattr(self.llm, "activation_checkpointing_enable"):  # transformers < 5 names it gradient_*
            if enable:
                self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.llm.gradient_checkpointing_disable()
        elif enable:
            self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.llm.activation_checkpointing_disable()

    def num_params(self, trainable_only: bool = False) -> dict[str, int]:
        """Parameter count per slot and ``total`` (works on meta-device models)."""
        counts = {slot: sum(p.numel() for p in getattr(self, slot).parameters()
                            if p.requires_grad or not trainable_only) for slot in SLOTS}
        counts["total"] = sum(counts.values())
        return counts

    def group_token_counts(self, batch: MultimodalBatch) -> list[int]:
        """LLM tokens each visual group yields, from the resampler's ``tokens_per_group``."""
        sizes = [tuple(s) for s in batch.tgt_sizes.tolist()]
        counts, first = [], 0
        for n in batch.group_sizes.tolist():
            counts.append(self.resampler.tokens_per_group(sizes[first:first + n]))
            first += n
        return counts

    def visual_positions(self, batch: MultimodalBatch) -> Tensor:
        """Flat indices [T_vis] into the [B*T] token grid receiving the packed visual tokens, in order.

        Raises:
            ValueError: an ``image_bound`` span's length differs from what its group yields, or it
                lies outside the batch; the message names the group and the sample.
        """
        rows, length = batch.input_ids.shape
        expected = self.group_token_counts(batch)
        if len(expected) != len(batch.image_bound):
            raise ValueError(f"{len(batch.image_bound)} image_bound spans for {len(expected)} visual groups")
        positions = []
        for group, ((row, start, end), want) in enumerate(zip(batch.image_bound.tolist(), expected)):
            where = f"visual group {group} (batch row {row}, sample {batch.sample_name(row)!r})"
            if not (0 <= row < rows and 0 <= start <= end <= length):
                raise ValueError(f"{where}: image_bound ({row}, {start}, {end}) is outside the [{rows}, {length}] batch")
            if end - start != want:
                raise ValueError(f"{where}: image_bound span holds {end - start} placeholders but the resampler "
                                 f"yields {want} tokens for it")
            positions.append(torch.arange(start, end) + row * length)
        return torch.cat(positions).to(batch.input_ids.device)

    def encode_visual(self, batch: MultimodalBatch) -> Tensor:
        """Packed visual tokens [T_vis, D] of every group in the batch, in group order."""
        return encode_visual(self.vpm, self.resampler, batch, self.visual_chunk_frames)

    def embed(self, batch: MultimodalBatch) -> Tensor:
        """``inputs_embeds`` [B, T, D]: text embeddings with each group's tokens at its image_bound span."""
        text = self.llm.get_input_embeddings()(batch.input_ids)
        if batch.num_groups == 0:
            # Text-only batch: no fake image. The visual params still join the graph with weight 0 so
            # DDP sees gradients (zeros) for them on every rank, not "unused parameters".
            unused = [p.sum() for slot in ("vpm", "resampler") for p in getattr(self, slot).parameters()
                      if p.requires_grad]
            return text + 0 * torch.stack(unused).sum().to(text.dtype) if unused else text
        positions = self.visual_positions(batch)
        tokens = self.encode_visual(batch)
        if tokens.shape[0] != positions.shape[0]:
            raise ValueError(f"the resampler produced {tokens.shape[0]} tokens but tokens_per_group promises "
                             f"{positions.shape[0]}")
        batch_size, length, dim = text.shape
        merged = text.reshape(batch_size * length, dim).index_copy(0, positions, tokens.to(text.dtype))
        return merged.view(batch_size, length, dim)

    def forward(self, batch: MultimodalBatch) -> MLLMOutput:
        """Logits [B, T, V] and, when the batch has labels, the next-token loss."""
        out = self.llm(inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask.long(),
                       position_ids=position_ids_from_mask(batch.attention_mask), use_cache=False)
        if batch.labels is None:
            return MLLMOutput(loss=None, logits=out.logits, num_loss_tokens=0)
        loss, count = next_token_loss(out.logits, batch.labels)
        return MLLMOutput(loss=loss, logits=out.logits, num_loss_tokens=count)

    @torch.no_grad()
    def generate(self, batch: MultimodalBatch, config: GenerationConfig | None = None, *, streamer=None,
                 tokenizer=None, **changes) -> list[Completion]:
        """Continuations of every prompt row, from ``blocks.generation.generate`` (KV-cached).

        The visual tokens and the prompt prefill are computed once, also for ``num_samples`` > 1.
        ``changes`` replace fields of ``config`` (default: greedy), e.g. ``max_new_tokens=6``. Without
        ``stop_token_ids`` the LLM config's ``eos_token_id`` stops a row. With ``think_open_id`` and
        ``think_close_id`` set, the rows whose prompt opened ``<think>`` are found from
        ``batch.input_ids`` (the thinking budget applies to them). Batches are expected left padded.

        Returns:
            ``batch_size * num_samples`` completions, prompt-major.
        """
        config = replace(config or GenerationConfig(), **changes)
        eos = self.llm.config.eos_token_id
        if not config.stop_token_ids and eos is not None:
            config = replace(config, stop_token_ids=tuple(eos) if isinstance(eos, list) else (eos,))
        thinking = None
        if config.think_open_id is not None and config.think_close_id is not None:
            thinking = opens_thinking(batch.input_ids, batch.attention_mask, config.think_open_id,
                                      config.think_close_id)
        return generate(self.llm, self.embed(batch), batch.attention_mask, config, thinking=thinking,
                        streamer=streamer, tokenizer=tokenizer)
