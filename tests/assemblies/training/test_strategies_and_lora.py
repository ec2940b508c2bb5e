"""Scale-out strategies built from the configs, and a LoRA stage run end to end."""

from __future__ import annotations

import pytest
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from safetensors.torch import load_file

from assemblies.presets import compose_config, mcpv45_tiny
from assemblies.training.pipeline import _strategy, train


def test_fsdp_wraps_and_checkpoints_each_repeated_layer_class():
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", "trainer=fsdp"])
    model = mcpv45_tiny()
    strategy = _strategy(cfg.trainer, model)
    assert isinstance(strategy, FSDPStrategy)
    units = {c.__name__ for c in strategy.kwargs["auto_wrap_policy"]._module_classes}
    assert units == {"Qwen3DecoderLayer", "SiglipEncoderLayer", type(model.resampler).__name__}
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy._activation_checkpointing_kwargs  # checkpointing per unit is on
    assert cfg.trainer.precision == "bf16-mixed"


def test_ddp_cpu_uses_gloo():
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", "trainer=ddp_cpu"])
    strategy = _strategy(cfg.trainer, mcpv45_tiny())
    assert isinstance(strategy, DDPStrategy) and strategy._process_group_backend == "gloo"


def test_deepspeed_strategy_builds_when_installed():
    pytest.importorskip("deepspeed")
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", "trainer=deepspeed"])
    assert type(_strategy(cfg.trainer, mcpv45_tiny())).__name__ == "DeepSpeedStrategy"


def test_lora_stage_trains_adapters_and_resampler_then_saves_official_keys(fast_cfg, tmp_path):
    train(fast_cfg("+experiment=lora_sft", "stages.sft.init_from=none", "stages.sft.lora.r=4",
                   "stages.sft.max_steps=3", "pipeline.export=false"))
    weights = load_file(tmp_path / "sft" / "model.safetensors")
    assert not [k for k in weights if "lora_" in k or "base_layer" in k]
    assert set(weights) == set(mcpv45_tiny().state_dict())
