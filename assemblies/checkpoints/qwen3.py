"""Load a Qwen3 LLM from a HF-format directory (config.json + safetensors) into an assembly's ``llm``.

Used to start MiniCPM-V training from a released text-only LLM. The directory's config is checked
against the slot's config first (same sizes, same RoPE), so a wrong model fails with the list of
differing fields rather than a wall of shape errors or, worse, silently different positions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from assemblies.checkpoints.files import checkpoint_files
from assemblies.checkpoints.official import load_tensors_into

# Fields that change the function the weights compute, beyond what tensor shapes reveal.
_MUST_MATCH = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "vocab_size", "rms_norm_eps", "tie_word_embeddings", "hidden_act")


def _rope_theta(config: dict) -> float:
    return float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))


def load_qwen3_llm(llm: nn.Module, directory: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Strictly load the HF-format Qwen3 checkpoint in ``directory`` into ``llm`` (e.g. ``model.llm``).

    Args:
        llm: a Qwen3 causal LM (keys ``model.*``, ``lm_head.weight``); real or meta parameters.
        directory: ``save_pretrained`` output: config.json + model.safetensors (or shards + index).
        dtype: dtype of the loaded tensors when ``llm`` is on meta; a materialised ``llm`` keeps its own.

    Raises:
        ValueError: config fields differ, or keys/shapes do not match (all listed).
    """
    directory = Path(directory)
    theirs = json.loads((directory / "config.json").read_text())
    ours = llm.config.to_dict()
    differing = {k: (theirs.get(k), ours.get(k)) for k in _MUST_MATCH if k in theirs and theirs[k] != ours.get(k)}
    if _rope_theta(theirs) != _rope_theta(ours):
        differing["rope_theta"] = (_rope_theta(theirs), _rope_theta(ours))
    if differing:
        raise ValueError(f"{directory}/config.json differs from the LLM slot (checkpoint, slot): {differing}")
    # A tied checkpoint stores no lm_head.weight: it is the embedding.
    optional = frozenset({"lm_head.weight"}) if llm.config.tie_word_embeddings else frozenset()
    load_tensors_into(llm, checkpoint_files(directory), str(directory), dtype, optional=optional)
    return llm
