"""Freezing by block, per-block param groups, LoRA injection and merge."""

from __future__ import annotations

import pytest
import torch

from assemblies.presets import mcpv45_tiny
from assemblies.training.stages import add_lora, freeze, merge_lora, param_groups


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mcpv45_tiny()


def test_freeze_trains_exactly_the_listed_blocks(model):
    report = freeze(model, ["resampler"])
    assert report.counts["vpm"][0] == 0 and report.counts["llm"][0] == 0
    assert report.counts["resampler"][0] == report.counts["resampler"][1] > 0
    assert all(p.requires_grad for p in model.resampler.parameters())
    assert not any(p.requires_grad for p in model.llm.parameters())
    with pytest.raises(ValueError, match="unknown block"):
        freeze(model, ["projector"])


def test_param_groups_one_lr_per_block_and_no_decay_on_vectors(model):
    freeze(model, ["vpm", "resampler"])
    groups = param_groups(model, {"vpm": 1e-4, "resampler": 1e-3}, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"vpm", "vpm/no_decay", "resampler", "resampler/no_decay"}
    assert by_name["vpm"]["lr"] == 1e-4 and by_name["resampler/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in by_name["vpm/no_decay"]["params"])
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="sets no lr"):
        param_groups(model, {"vpm": 1e-4})


def test_lora_trains_adapters_only_and_merges_back_to_official_keys():
    torch.manual_seed(0)
    model = mcpv45_tiny()
    keys = set(model.state_dict())
    add_lora(model, r=4, alpha=8, dropout=0.0)
    report = freeze(model, ["resampler"], lora_targets_llm=True)
    lora = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert report.counts["resampler"][0] == report.counts["resampler"][1]
    # Give the adapters a non-zero update, then check merging keeps the function and restores the keys.
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    ids = torch.randint(0, 200, (1, 12))
    before = model.llm(input_ids=ids).logits
    merge_lora(model)
    assert set(model.state_dict()) == keys
    torch.testing.assert_close(model.llm(input_ids=ids).logits, before, atol=1e-5, rtol=1e-4)
