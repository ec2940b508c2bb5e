"""DDP over 2 gloo processes where one rank's micro-batch was entirely skipped: that rank runs a
zero-weighted step on a stand-in sample, so both ranks meet in the gradient all-reduce (instead of one
waiting for the other), and the step equals rank 0's gradient averaged with zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from blocks.batch import collate
from tests.assemblies.training import ddp_skipped_batch as script

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two processes at once: never beside another such test
def test_a_rank_whose_batch_was_all_skipped_still_joins_the_step(tmp_path):
    done = subprocess.run([sys.executable, script.__file__, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)  # one step, taken together

    # The reference: rank 0's batch (records 0 and 2), its gradient halved (averaged with rank 1's zeros).
    model, dataset, pad_id = script.build()
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    model.train()
    model(collate([dataset[0], dataset[2]], pad_id)).loss.backward()
    trained = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 0]
    assert any(name.startswith("vpm.") for name in trained) and any(name.startswith("llm.") for name in trained)
    for name, parameter in model.named_parameters():
        expected = before[name] - script.LR * parameter.grad / 2
        full_step = before[name] - script.LR * parameter.grad
        assert torch.allclose(rank0[name], expected, rtol=1e-4, atol=1e-7), name
        if name in trained[:3]:  # the halving is visible: a step on rank 0's gradient alone would differ
            assert not torch.allclose(rank0[name], full_step, rtol=1e-4, atol=1e-7), name
