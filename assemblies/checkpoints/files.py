"""The one reader of safetensors checkpoints: a file, a directory with a shard index, or a directory of
shards. Stage weights, the official layout and HF SigLIP / Qwen3 directories all read through here.

Only safetensors are read: a directory that holds pickled weights (``.bin``, ``.pt``, ``.pth``) and
no safetensors is refused by name, never unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def _names_in(file: Path) -> list[str]:
    with safe_open(str(file), framework="pt") as handle:
        return list(handle.keys())


def checkpoint_files(path: str | Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of a checkpoint.

    ``path`` is a safetensors file, or a directory with ``model.safetensors.index.json`` (its shards),
    ``model.safetensors``, or other ``*.safetensors`` files (all of them), in that order of preference.

    Raises:
        FileNotFoundError: nothing loadable at ``path`` (pickled weights there are named), or the
            index names a shard that does not exist.
        ValueError: two files of a directory hold the same tensor name.
    """
    path = Path(path)
    if path.is_file():
        return dict.fromkeys(_names_in(path), path)
    if (path / INDEX_NAME).is_file():
        weight_map = json.loads((path / INDEX_NAME).read_text())["weight_map"]
        files = {name: path / shard for name, shard in weight_map.items()}
        missing = sorted({str(p) for p in files.values() if not p.is_file()})
        if missing:
            raise FileNotFoundError(f"{path / INDEX_NAME} names shards that do not exist: {missing}")
        return files
    shards = [path / SINGLE_NAME] if (path / SINGLE_NAME).is_file() else sorted(path.glob("*.safetensors"))
    if not shards:
        pickles = sorted(p.name for p in path.glob("*") if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
        raise FileNotFoundError(
            f"no safetensors weights at {path} (expected a .safetensors file, a directory with {INDEX_NAME}, or "
            f"*.safetensors files)" + (f"; it holds {pickles}: convert them to safetensors, this project never "
                                       f"unpickles" if pickles else ""))
    files: dict[str, Path] = {}
    for shard in shards:
        for name in _names_in(shard):
            if name in files:
                raise ValueError(f"{name!r} is in both {files[name].name} and {shard.name} of {path}")
            files[name] = shard
    return files


def names_per_file(files: Mapping[str, Path]) -> dict[Path, list[str]]:
    """``checkpoint_files``' map inverted: file -> the tensor names it holds."""
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    return by_file


def iter_shards(files: Mapping[str, Path], dtype: torch.dtype | None = None,
                strip_prefix: str = "") -> Iterator[dict[str, Tensor]]:
    """The tensors of ``files`` one file at a time (bounding peak memory), cast to ``dtype``."""
    for path, names in names_per_file(files).items():
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name.removeprefix(strip_prefix): handle.get_tensor(name) for name in names}
        yield tensors if dtype is None else {name: t.to(dtype) for name, t in tensors.items()}


def read_tensor(files: Mapping[str, Path], name: str) -> Tensor:
    """One tensor of a checkpoint (``checkpoint_files``' map), read without the rest of its file."""
    with safe_open(str(files[name]), framework="pt") as handle:
        return handle.get_tensor(name)


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint at ``path`` (see ``checkpoint_files``), in one dict."""
    return {name: tensor for shard in iter_shards(checkpoint_files(path)) for name, tensor in shard.items()}


def tensor_shapes(files: Mapping[str, Path], strip_prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Name -> shape from the safetensors headers (no tensor data read)."""
    shapes = {}
    for path in set(files.values()):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                if name in files:
                    shapes[name.removeprefix(strip_prefix)] = tuple(handle.get_slice(name).get_shape())
    return shapes
