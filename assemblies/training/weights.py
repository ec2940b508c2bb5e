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
import yaml
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


def weights_files(location: str | Path) -> dict[str, Path]:
    """``checkpoint_files(location)``, refusing by name what is easily passed instead of weights.

    Raises:
        FileNotFoundError: ``location`` does not exist, or is a training run directory (its stages named).
        ValueError: ``location`` is a Lightning ``.ckpt`` (or a folder of them): pickled, never loaded here.
    """
    path = Path(location)
    if not path.exists():
        raise FileNotFoundError(f"no safetensors weights at {path}: it does not exist")
    lightning = path.suffix == ".ckpt" if path.is_file() else any(path.glob("*.ckpt")) and not any(
        path.glob("*.safetensors"))
    if lightning:
        folder = path.parent if path.is_file() else path
        instead = "a stage's weights, <run dir>/<stage>/" + WEIGHTS_FILE + ", or that stage directory"
        if folder.name == "checkpoints":  # <run dir>/<stage>/checkpoints/last.ckpt
            later = "" if (folder.parent / WEIGHTS_FILE).is_file() else " (written when the stage finishes)"
            instead = f"the stage's weights, {folder.parent / WEIGHTS_FILE}{later}, or its directory {folder.parent}"
        raise ValueError(f"{path} is a Lightning training checkpoint (pickled, with optimizer state; this project "
                         f"never unpickles): pass {instead}")
    if path.is_dir() and (path / "config.yaml").is_file() and not any(path.glob("*.safetensors")):
        recipe = list((yaml.safe_load((path / "config.yaml").read_text()) or {}).get("stages") or {})
        stages = sorted((weights.parent for weights in path.glob(f"*/{WEIGHTS_FILE}")),  # recipe order, else age
                        key=lambda stage: (recipe.index(stage.name) if stage.name in recipe else len(recipe),
                                           (stage / WEIGHTS_FILE).stat().st_mtime_ns))
        if not stages:
            raise FileNotFoundError(f"{path} is a training run directory with no finished stage (no "
                                    f"<stage>/{WEIGHTS_FILE}): pass a stage directory once its stage has finished")
        raise FileNotFoundError(f"{path} is a training run directory; its stages' weights are in "
                                f"{', '.join(stage.name + '/' for stage in stages)}: pass one of those, e.g. "
                                f"{stages[-1]} (the last stage)")
    return checkpoint_files(path)


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
        for file, keys in names_per_file(weights_files(location)).items():
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


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """All parameters and persistent buffers of ``model`` (or a state dict) as one safetensors file
    (contiguous copies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = model.state_dict() if isinstance(model, nn.Module) else model
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    with atomic_path(path) as partial:  # a kill mid-write leaves the previous file, not a truncated one
        save_file(state, str(partial))
    return path


def tensor_index(source: str | Path | Mapping[str, str | Path]) -> dict[str, tuple[Path, str]]:
    """Model key -> (safetensors file, key inside it) for an ``init_from`` source (the forms above), without
    reading any tensor: what FSDP units load their own tensors from (``assemblies.training.sharding``)."""
    sources = source.items() if isinstance(source, Mapping) else [("", source)]
    index = {}
    for prefix, location in sources:
        key_prefix = f"{prefix}." if prefix else ""
        for key, file in checkpoint_files(location).items():
            index[key_prefix + key] = (file, key)
    return index
