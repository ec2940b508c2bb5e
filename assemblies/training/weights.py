"""Weights between stages: safetensors in, safetensors out, never unpickled.

``init_from`` of a stage is one of: ``none`` (keep the built model's initialisation), ``previous``
(the preceding stage's weights), a directory or file of safetensors with the assembly's (official)
keys, e.g. an official MiniCPM-V 4.5 checkpoint, or ``{block: dir}`` per block. A block's directory
is either safetensors with that block's keys (``{resampler: dir}`` -> ``resampler.query``...), or a
Hugging Face model directory, recognised by its config.json's ``model_type`` and converted by its
loader: SigLIP / SigLIP2 for ``vpm`` (``assemblies.checkpoints.siglip``: 70 x 70 positions, 14-px
kernels) and Qwen3 for ``llm`` (``assemblies.checkpoints.qwen3``: the vocabulary resized to the
tokenizer's).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from assemblies.checkpoints.files import checkpoint_files, names_per_file
from assemblies.checkpoints.qwen3 import load_qwen3_llm
from assemblies.checkpoints.siglip import SUPPORTED as SIGLIP_TYPES, load_siglip_vision
from assemblies.training.checkpointing import atomic_path
from blocks.vision import NaViTSiglip

log = logging.getLogger(__name__)
WEIGHTS_FILE = "model.safetensors"


def hf_model_type(location: str | Path) -> str | None:
    """The ``model_type`` of a Hugging Face model directory (its config.json), None for anything else."""
    config = Path(location) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def _load_hf_block(model: nn.Module, block: str, location: str | Path, model_type: str, tokenizer) -> bool:
    """Load a Hugging Face directory into ``block`` through its converting loader; False if none applies."""
    if model_type in SIGLIP_TYPES and block == "vpm":
        if not isinstance(model.vpm, NaViTSiglip):
            raise ValueError(f"init_from vpm: {location} is a {model_type} tower; the vision slot holds a "
                             f"{type(model.vpm).__name__}, not navit_siglip")
        load_siglip_vision(location, tower=model.vpm)
    elif model_type == "qwen3" and block == "llm":
        load_qwen3_llm(model.llm, location, tokenizer=tokenizer)
    elif model_type in (*SIGLIP_TYPES, "qwen3"):
        raise ValueError(f"init_from {block}: {location} is a {model_type} model; it initialises "
                         f"{'vpm' if model_type in SIGLIP_TYPES else 'llm'}, not {block}")
    else:
        return False
    return True


def load_weights(model: nn.Module, source: str | Path | Mapping[str, str | Path], strict: bool = True,
                 tokenizer=None) -> list[str]:
    """Copy weights from ``source`` into ``model`` (see the module docstring for the forms).

    ``tokenizer``: the one the model will train with; a Qwen3 directory's vocabulary is resized to it.

    Returns:
        model parameter/buffer names that the source did not cover.

    Raises:
        KeyError: with ``strict``, the source has keys the model lacks or of another shape.
    """
    sources = source.items() if isinstance(source, Mapping) else [("", source)]
    state = model.state_dict()
    loaded: set[str] = set()
    problems = []
    for prefix, location in sources:
        model_type = hf_model_type(location) if prefix else None
        if model_type and _load_hf_block(model, prefix, location, model_type, tokenizer):
            loaded.update(name for name in state if name.startswith(f"{prefix}."))
            continue
        key_prefix = f"{prefix}." if prefix else ""
        # One tensor at a time: a whole-model file never sits in memory next to the model.
        for file, keys in names_per_file(checkpoint_files(location)).items():
            with safe_open(str(file), framework="pt") as handle:
                for key in keys:
                    name = key_prefix + key
                    if name not in state:
                        problems.append(f"{file.name}: unexpected key {key!r}")
                        continue
                    tensor = handle.get_tensor(key)
                    if tensor.shape != state[name].shape:
                        problems.append(f"{file.name}: {key!r} has shape {tuple(tensor.shape)}, model expects "
                                        f"{tuple(state[name].shape)}")
                        continue
                    with torch.no_grad():
                        state[name].copy_(tensor)
                    loaded.add(name)
    if problems and strict:
        raise KeyError(f"weights from {source} do not fit the model ({len(problems)} problems): "
                       + "; ".join(problems[:8]))
    covered_blocks = {name.split(".")[0] for name in loaded}
    missing = [name for name in state if name not in loaded and name.split(".")[0] in covered_blocks]
    log.info("loaded %d tensors from %s; %d of the covered blocks' tensors missing", len(loaded), source, len(missing))
    return missing


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """All parameters and persistent buffers of ``model`` as one safetensors file (contiguous copies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as partial:  # a kill mid-write leaves the previous file, not a truncated one
        save_file(state, str(partial))
    return path
