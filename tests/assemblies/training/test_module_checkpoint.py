"""Lightning checkpoints rebuild their module: ``load_from_checkpoint(path)`` with no other argument."""

from __future__ import annotations

import pytest
import torch

from assemblies.training.contrastive_module import ContrastiveModule
from assemblies.training.module import MLLMModule
from assemblies.training.pipeline import train

RUN = ["callbacks.model_checkpoint.every_n_train_steps=1", "pipeline.export=false"]


@pytest.mark.parametrize("stage, module_class, extra", [
    ("stage3", MLLMModule, []),
    # LoRA adapters are rebuilt before the weights load; so are the contrastive wrapper and its text tower.
    pytest.param("sft", MLLMModule, ["+experiment=lora_sft"], marks=pytest.mark.slow),
    pytest.param("stage0", ContrastiveModule, [], marks=pytest.mark.slow),
])
def test_a_checkpoint_loads_into_a_module_it_builds_itself(fast_cfg, tmp_path, stage, module_class, extra):
    train(fast_cfg(f"pipeline.stages=[{stage}]", f"stages.{stage}.init_from=none", *RUN, *extra))
    path = tmp_path / stage / "checkpoints" / "last.ckpt"
    module = module_class.load_from_checkpoint(path, weights_only=True)  # hyperparameters are plain config
    saved = torch.load(path, weights_only=True)["state_dict"]
    state = module.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[name], saved[name]) for name in saved)
    assert module.hparams.total_steps == 2 and module.hparams.optimizer["_target_"] == "torch.optim.AdamW"
    assert any("lora_A" in name for name in saved) == bool(extra)
