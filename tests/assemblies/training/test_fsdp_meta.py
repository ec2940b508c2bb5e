"""FSDP from the meta device on 2 gloo processes: the sharded step equals the unsharded one, and no rank
ever holds the whole model's parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from assemblies.checkpoints.official import parameters_on_meta
from assemblies.presets import mcpv45_tiny
from assemblies.training.sharding import materialize
from blocks.batch import collate
from tests.assemblies.training import fsdp_meta_step as script

ROOT = Path(__file__).resolve().parents[3]


def test_materialize_is_seeded_per_module_and_matches_the_blocks_own_init():
    def meta_model():
        with parameters_on_meta():
            return mcpv45_tiny()

    first = materialize(meta_model(), script.SEED).state_dict()
    again = materialize(meta_model(), script.SEED).state_dict()
    other = materialize(meta_model(), script.SEED + 1).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)
    key = "vpm.encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(first[key], other[key])
    # Each block's own init, not torch's default: SigLIP layers have unit LayerNorms and zero q biases.
    assert torch.equal(first["vpm.encoder.layers.0.layer_norm1.weight"],
                       torch.ones_like(first["vpm.encoder.layers.0.layer_norm1.weight"]))
    assert not first["vpm.encoder.layers.0.self_attn.q_proj.bias"].any()
    assert not any(t.is_meta for t in first.values())


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two processes at once: never beside another such test
def test_sharded_step_from_meta_equals_the_unsharded_step_and_no_rank_holds_the_model(tmp_path):
    done = subprocess.run([sys.executable, script.__file__, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    sharded = load_file(tmp_path / "weights.safetensors")

    # The reference: the same init in one process, the two ranks' batches, their gradients averaged.
    model, dataset, pad_id = script.build()
    materialize(model, script.SEED)
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    model.train()
    losses = [model(collate([dataset[r], dataset[r + 2]], pad_id)).loss for r in (0, 1)]
    (sum(losses) / 2).backward()
    grad_norm = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    for rank, loss in zip(ranks, losses):
        assert rank["loss"] == pytest.approx(float(loss), rel=1e-5)
        assert rank["grad_norm"] == pytest.approx(float(grad_norm), rel=1e-4)  # over all shards, on every rank
    moved = 0
    for name, parameter in model.named_parameters():
        expected = before[name] - script.LR * parameter.grad
        assert torch.allclose(sharded[name], expected, rtol=1e-4, atol=1e-6), name
        moved += not torch.allclose(expected, before[name], rtol=1e-4, atol=1e-6)
    assert moved > 20  # the step changed the model: equality is not just "nothing trained"

    total = ranks[0]["total_bytes"]
    assert total == sum(p.numel() * p.element_size() for p in model.parameters())
    for rank in ranks:
        assert rank["shard_bytes"] <= 0.55 * total  # half the model, plus FSDP's padding
        # At most this rank's shards plus the unit being built: far from a full copy.
        assert 0 < rank["peak_bytes"] < 0.65 * total, (rank["peak_bytes"], total)
