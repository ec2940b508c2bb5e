"""Qwen3 causal LM builders: a transformers ``Qwen3ForCausalLM`` from explicit sizes, never downloaded.

The LLM slot of the assembly holds a transformers causal LM as is, so its state_dict keys
(``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``, ...) are the official ones and its
``generate`` is the reference decoding loop. Shapes: ``forward(inputs_embeds [B, T, hidden_size],
attention_mask [B, T], position_ids [B, T]) -> logits [B, T, vocab_size]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM


def qwen3(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int, head_dim: int,
          intermediate_size: int, rope_theta: float = 1e6, rms_norm_eps: float = 1e-6,
          max_position_embeddings: int = 40960, tie_word_embeddings: bool = False,
          attn_implementation: str = "sdpa", bos_token_id: int | None = None,
          eos_token_id: int | None = None) -> Qwen3ForCausalLM:
    """A randomly initialised Qwen3 causal LM with these sizes.

    Builds on the current default device, so ``with torch.device("meta"):`` gives the full 8B
    model in well under a second without allocating weights.

    Args:
        vocab_size: rows of the embedding and of ``lm_head``.
        hidden_size: residual width D.
        num_layers: decoder layers.
        num_heads: query heads; ``num_heads * head_dim`` need not equal D (Qwen3 projects).
        num_kv_heads: key/value heads (grouped-query attention).
        head_dim: per-head width.
        intermediate_size: SwiGLU MLP width.
        rope_theta: RoPE base.
        rms_norm_eps: RMSNorm epsilon (also of the per-head q/k norms).
        max_position_embeddings: longest context the config declares.
        tie_word_embeddings: share ``lm_head`` with the input embedding.
        attn_implementation: transformers attention backend (``sdpa``, ``eager``, ``flash_attention_2``).
        bos_token_id, eos_token_id: the tokenizer's ids (``generate`` stops at eos), if known.
    """
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=head_dim, rms_norm_eps=rms_norm_eps, max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        tie_word_embeddings=tie_word_embeddings, use_sliding_window=False, sliding_window=None,
        max_window_layers=num_layers, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    config._attn_implementation = attn_implementation
    return Qwen3ForCausalLM(config)


def qwen3_8b(attn_implementation: str = "sdpa") -> Qwen3ForCausalLM:
    """The LLM of MiniCPM-V 4.5 (its config.json numbers; vocab 151748): 8,189,195,264 parameters."""
    return qwen3(vocab_size=151748, hidden_size=4096, num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128,
                 intermediate_size=12288, attn_implementation=attn_implementation,
                 bos_token_id=151643, eos_token_id=151645)


def qwen3_tiny(vocab_size: int = 1024, attn_implementation: str = "sdpa") -> Qwen3ForCausalLM:
    """Same topology, test size: hidden 64, 2 layers, 4 heads (2 kv), head_dim 16, MLP 128, vocab 1024."""
    return qwen3(vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                 intermediate_size=128, attn_implementation=attn_implementation)


def from_pretrained_dir(path: str | Path, dtype: torch.dtype = torch.float32,
                        attn_implementation: str = "sdpa") -> Qwen3ForCausalLM:
    """A Qwen3 causal LM from a local HF-format directory (config.json + safetensors); never downloads.

    Raises:
        FileNotFoundError: ``path`` is not a directory with a config.json.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a local model directory (no config.json); downloads are never attempted")
    return Qwen3ForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True, dtype=dtype,
                                            attn_implementation=attn_implementation)


def layer_classes(llm: nn.Module) -> tuple[type, ...]:
    """The repeated decoder layer class(es) of ``llm`` (the FSDP wrapping / checkpointing unit)."""
    return tuple(dict.fromkeys(type(layer) for layer in llm.model.layers))
