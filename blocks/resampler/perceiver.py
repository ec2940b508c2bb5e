"""The MiniCPM-V perceiver resampler: learned queries cross-attend to packed visual features.

Same parameters, names and math as the official ``resampler.py`` (MiniCPM-V 4.5), so the official
``resampler.*`` checkpoint weights load 1:1:

    q = ln_q(query)                                        [Q, D]
    v = ln_kv(kv_proj(x))                                  per patch, [*, D]
    k = v + pos2d(row, col) (+ temporal(frame id))         keys only get positions
                                                           (positions_in_values=True: v = k)
    out = ln_post(MultiheadAttention(q, k, v)) @ proj      [Q, D] per group

The 3-D variant compresses a *group* (an image slice, or 1-6 consecutive video frames) into one set
of Q outputs: the keys of all frames of the group form one key set (frame-major), and each frame's
keys get the 1-D sincos embedding of its temporal id (none for id -1). The 2-D variant (for the
ablation) treats every slice/frame as its own group and adds no temporal embedding.

Differences from the official code, on purpose:

- Attention runs through ``packed_attention`` on packed key sets: no padding, no mask. ``attn``
  (an ``nn.MultiheadAttention``) is only the parameter container; ``forward_padded`` keeps the
  official padded algorithm as a reference and benchmark baseline.
- We match the official ``batch_attn_forward`` path (``batch_3d_resampler=true`` in the released
  config). The official ``foreach_attn_forward`` path flattens keys patch-major but the padding mask
  frame-major, so for a multi-frame group with padded frames it attends to padding (golden quirk,
  resampler case 3); we do not reproduce that.
- Position tables are computed at use from the input sizes (``blocks/positions.py``), never stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from blocks.attention import packed_attention
from blocks.batch import check_packed_layout
from blocks.positions import packed_sincos_2d, sincos_2d_at, temporal_sincos


class PerceiverResampler(nn.Module):
    """Official-compatible MiniCPM-V resampler (one cross-attention of Q learned queries).

    Args:
        num_queries: Q, output tokens per group.
        embed_dim: D, width of queries, attention and output.
        kv_dim: width of the incoming visual features; ``kv_proj`` is Identity when equal to D.
        num_heads: attention heads (official: D // 128).
        temporal: True = 3-D (frames of a group share one key set + temporal embedding);
            False = 2-D (every slice/frame is its own group).
        attn_backend: ``packed_attention`` backend.
        positions_in_values: False = official (positions steer where a query looks but do not reach
            its output). True adds the same table to the values, so each output token also carries
            the place and time it read from; no parameters change. An ablation for towers whose
            features hold little place (docs/tiny_recipe.md, "Position").
        region_grid: None = the official init. G = region init (``localize_queries``) over a
            G x G patch slice, for resamplers trained from scratch; weights only, so a checkpoint
            stays official.
    """

    def __init__(self, num_queries: int, embed_dim: int, kv_dim: int, num_heads: int,
                 temporal: bool = True, attn_backend: str = "auto", positions_in_values: bool = False,
                 region_grid: int | None = None) -> None:
        super().__init__()
        if embed_dim % num_heads or embed_dim % 4:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads} and by 4")
        if region_grid is not None and (round(num_queries ** 0.5) ** 2 != num_queries or embed_dim % (4 * num_heads)):
            raise ValueError(f"region_grid needs a square num_queries (got {num_queries}) and embed_dim "
                             f"{embed_dim} divisible by 4 * num_heads ({4 * num_heads})")
        self.num_queries = num_queries
        self.out_dim = embed_dim
        self.num_heads = num_heads
        self.temporal = temporal
        self.attn_backend = attn_backend
        self.positions_in_values = positions_in_values
        self.region_grid = region_grid
        # One cross-attention, no repeated layers: wrap/checkpoint the block as a whole.
        self.layer_classes: tuple[type, ...] = ()

        self.query = nn.Parameter(torch.empty(num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official init: trunc-normal(0.02) query and Linear weights, zero biases, unit LayerNorms,
        MultiheadAttention's own init for ``in_proj``, ``proj = D**-0.5 * randn``; then the region
        init when ``region_grid`` is set."""
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attn._reset_parameters()  # xavier in_proj_weight, zero in_proj_bias and out_proj.bias
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.proj.copy_(self.out_dim ** -0.5 * torch.randn_like(self.proj))
        if self.region_grid is not None:
            self.localize_queries(self.region_grid)

    @torch.no_grad()
    def localize_queries(self, grid: int, gain: float = 3.0, content_scale: float = 0.1) -> None:
        """Region init: the Q queries tile a ``grid`` x ``grid`` patch slice as a sqrt(Q) x sqrt(Q)
        board, and each starts out attending to its own cell.

        With the official init every query looks at the whole slice, and a tiny tower trained from
        scratch keeps it that way: near-identical tokens that say what is in the image but not where
        (docs/tiny_recipe.md, "Position"). Here query i is the sincos position of its cell centre,
        and the query and key projections are ``gain`` times one permutation that gives every head
        every ``num_heads``-th frequency of both axes (the table holds the column frequencies in its
        first half, the rows' in the second). A head's logit for patch j is then
        ``gain**2 * ln_q(pos_i) . (v_j + pos_j) / sqrt(head_dim)``, peaked at the patches of cell i.
        The patch term ``ln_q(pos_i) . v_j`` would outweigh the place over varied features (a
        pre-trained tower's), so ``ln_kv``'s scale starts at ``content_scale``; the values lose
        nothing by it, ``ln_post`` normalises the output. Training moves everything from there; the
        value and output projections keep the official init.
        """
        side, dim, frequencies = round(self.num_queries ** 0.5), self.out_dim, self.out_dim // 4
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) * grid / side - 0.5
        self.query.copy_(sincos_2d_at(centres.repeat_interleave(side), centres.repeat(side), dim))
        # sincos_2d_at's layout: [sin f0..fn, cos f0..fn] per axis, columns first, then rows.
        order = [part * frequencies + f for head in range(self.num_heads)
                 for f in range(head, frequencies, self.num_heads) for part in range(4)]
        permutation = torch.eye(dim)[order]
        self.attn.in_proj_weight[: 2 * dim].copy_(gain * torch.cat([permutation, permutation]))
        self.ln_kv.weight.fill_(content_scale)

    def group_frames(self, tgt_sizes: Tensor, group_sizes: Tensor) -> Tensor:
        """Frames per attention group: ``group_sizes`` for 3-D, all ones for 2-D. [G'] long."""
        return group_sizes.long() if self.temporal else torch.ones(len(tgt_sizes), dtype=torch.long,
                                                                   device=tgt_sizes.device)

    def tokens_per_group(self, frame_sizes: list[tuple[int, int]]) -> int:
        """LLM placeholder tokens that a group of frames with these (h, w) patch sizes yields."""
        return self.num_queries if self.temporal else self.num_queries * len(frame_sizes)

    def _keys_values(self, x: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Per-patch keys and values before the attention's in-projection. [N, D] each."""
        values = self.ln_kv(self.kv_proj(x))
        positions = packed_sincos_2d(tgt_sizes, self.out_dim)
        if self.temporal:
            counts = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).long()
            frame_embedding = temporal_sincos(temporal_ids.long(), self.out_dim)
            positions = positions + torch.repeat_interleave(frame_embedding, counts, dim=0)
        keys = values + positions.to(values)
        return keys, keys if self.positions_in_values else values

    def _in_proj(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        return F.linear(q, w_q, b_q), F.linear(k, w_k, b_k), F.linear(v, w_v, b_v)

    def _output(self, attended: Tensor) -> Tensor:
        return self.ln_post(self.attn.out_proj(attended)) @ self.proj

    def forward(self, x: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> Tensor:
        """Compress packed visual features into Q tokens per group.

        Args:
            x: [N, kv_dim] features of every patch, slice-major, row-major inside a slice.
            tgt_sizes: [S, 2] (patch rows h, patch cols w) per slice/frame; N = sum(h*w).
            temporal_ids: [S] frame time ids, -1 for image slices.
            group_sizes: [G] consecutive slices compressed together (sum = S).

        Returns:
            [G'*Q, D] in group order, G' = G (3-D) or S (2-D); ``.view(G', Q, D)`` gives the
            official [G', Q, D] output.
        """
        check_packed_layout(x, tgt_sizes, temporal_ids, group_sizes)
        frames = self.group_frames(tgt_sizes, group_sizes)
        if len(frames) == 0:
            return x.new_zeros(0, self.out_dim)
        keys, values = self._keys_values(x, tgt_sizes, temporal_ids)
        q, k, v = self._in_proj(self.ln_q(self.query), keys, values)

        # Keys of a group are its frames' patches, already contiguous and frame-major in x.
        patches_per_frame = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).cpu()
        kv_lens = [int(part.sum()) for part in patches_per_frame.split(frames.tolist())]
        heads, head_dim = self.num_heads, self.out_dim // self.num_heads
        queries = q.view(1, -1, heads, head_dim).expand(len(frames), -1, -1, -1).reshape(-1, heads, head_dim)
        attended = packed_attention(queries, k.view(-1, heads, head_dim), v.view(-1, heads, head_dim),
                                    [self.num_queries] * len(frames), kv_lens,
                                    backend=self.attn_backend)
        return self._output(attended.reshape(-1, self.out_dim))

    def forward_padded(self, x: Tensor, tgt_sizes: Tensor, temporal_ids: Tensor, group_sizes: Tensor) -> Tensor:
        """The official padded algorithm (``batch_attn_forward``), same inputs and output as ``forward``.

        Pads every slice to the longest slice, concatenates a group's padded frames, pads the groups
        to the longest group and runs ``self.attn`` with a key padding mask. The reference for tests
        and the baseline of the packing benchmark; the assemblies use ``forward``. (The official code
        pads ``x`` before ``kv_proj``; projecting first gives the same numbers with fewer rows.)
        """
        check_packed_layout(x, tgt_sizes, temporal_ids, group_sizes)
        frames = self.group_frames(tgt_sizes, group_sizes)
        if len(frames) == 0:
            return x.new_zeros(0, self.out_dim)
        counts = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).long().tolist()
        keys, values = self._keys_values(x, tgt_sizes, temporal_ids)
        padded_keys = pad_sequence(list(keys.split(counts)), batch_first=True)      # [S, L, D]
        padded_values = pad_sequence(list(values.split(counts)), batch_first=True)  # [S, L, D]
        longest = padded_keys.shape[1]
        is_padding = torch.arange(longest, device=x.device)[None, :] >= torch.tensor(counts, device=x.device)[:, None]

        frame_counts = frames.tolist()
        group_keys = pad_sequence([k.reshape(-1, self.out_dim) for k in padded_keys.split(frame_counts)])
        group_values = pad_sequence([v.reshape(-1, self.out_dim) for v in padded_values.split(frame_counts)])
        group_mask = pad_sequence([m.reshape(-1) for m in is_padding.split(frame_counts)],
                                  batch_first=True, padding_value=True)             # [G', L*frames]
        queries = self.ln_q(self.query)[:, None, :].expand(-1, len(frame_counts), -1)
        attended = self.attn(queries, group_keys, group_values, key_padding_mask=group_mask,
                             need_weights=False)[0]                                # [Q, G', D]
        return (self.ln_post(attended.transpose(0, 1)) @ self.proj).reshape(-1, self.out_dim)


def resampler3d(num_queries: int, embed_dim: int, kv_dim: int, num_heads: int | None = None,
                attn_backend: str = "auto", positions_in_values: bool = False,
                region_grid: int | None = None) -> PerceiverResampler:
    """3-D resampler: Q queries per group of frames; ``num_heads`` defaults to D // 128 (official)."""
    return PerceiverResampler(num_queries, embed_dim, kv_dim, num_heads or max(1, embed_dim // 128),
                              temporal=True, attn_backend=attn_backend, positions_in_values=positions_in_values,
                              region_grid=region_grid)


def resampler2d(num_queries: int, embed_dim: int, kv_dim: int, num_heads: int | None = None,
                attn_backend: str = "auto", positions_in_values: bool = False,
                region_grid: int | None = None) -> PerceiverResampler:
    """2-D resampler: Q queries per slice/frame, no temporal embedding."""
    return PerceiverResampler(num_queries, embed_dim, kv_dim, num_heads or max(1, embed_dim // 128),
                              temporal=False, attn_backend=attn_backend, positions_in_values=positions_in_values,
                              region_grid=region_grid)


def resampler3d_mcpv45(attn_backend: str = "auto") -> PerceiverResampler:
    """MiniCPM-V 4.5 size: 64 queries, width 4096, 32 heads, SigLIP width 1152 (88,907,776 params)."""
    return resampler3d(64, 4096, 1152, 32, attn_backend=attn_backend)


def resampler3d_tiny(attn_backend: str = "auto") -> PerceiverResampler:
    """Tiny test/CPU preset: 16 queries, width 64, 2 heads (head dim 32), kv_dim 64."""
    return resampler3d(16, 64, 64, 2, attn_backend=attn_backend)


def resampler2d_mcpv45(attn_backend: str = "auto") -> PerceiverResampler:
    """The 2-D ablation at MiniCPM-V 4.5 size (same parameters as ``resampler3d_mcpv45``)."""
    return resampler2d(64, 4096, 1152, 32, attn_backend=attn_backend)


def resampler2d_tiny(attn_backend: str = "auto") -> PerceiverResampler:
    """Tiny 2-D preset, same sizes as ``resampler3d_tiny``."""
    return resampler2d(16, 64, 64, 2, attn_backend=attn_backend)
