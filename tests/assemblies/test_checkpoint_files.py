"""assemblies/checkpoints/files.py: the one safetensors reader, in every layout it accepts and refuses."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from assemblies.checkpoints.files import checkpoint_files, read_tensors, tensor_shapes

A, B = {"a.weight": torch.ones(2, 3)}, {"b.bias": torch.zeros(4)}


def test_a_file_an_index_a_single_file_and_loose_shards_read_the_same(tmp_path):
    layouts = {name: tmp_path / name for name in ("index", "single", "loose")}
    for directory in layouts.values():
        directory.mkdir()
    save_file(A, str(layouts["index"] / "model-00001-of-00002.safetensors"))
    save_file(B, str(layouts["index"] / "model-00002-of-00002.safetensors"))
    (layouts["index"] / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00002-of-00002.safetensors"}}))
    save_file({**A, **B}, str(layouts["single"] / "model.safetensors"))
    save_file(A, str(layouts["loose"] / "part1.safetensors"))
    save_file(B, str(layouts["loose"] / "part2.safetensors"))
    for path in (*layouts.values(), layouts["single"] / "model.safetensors"):
        tensors = read_tensors(path)
        assert sorted(tensors) == ["a.weight", "b.bias"] and torch.equal(tensors["a.weight"], A["a.weight"])
        assert tensor_shapes(checkpoint_files(path)) == {"a.weight": (2, 3), "b.bias": (4,)}


def test_pickles_missing_shards_and_duplicate_names_are_refused_by_name(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(FileNotFoundError, match=r"\['pytorch_model.bin'\].*never unpickles"):
        checkpoint_files(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "gone.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        checkpoint_files(tmp_path)
    (tmp_path / "model.safetensors.index.json").unlink()
    save_file(A, str(tmp_path / "one.safetensors"))
    save_file(A, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match="'a.weight' is in both one.safetensors and two.safetensors"):
        checkpoint_files(tmp_path)
