"""Stages as data: which blocks train, at which learning rate, and LoRA on the LLM.

A stage config names blocks by the assembly's attribute names (``vpm``, ``resampler``, ``llm``, and
``contrastive`` for the head of contrastive pre-training, ``assemblies.contrastive``),
so ``trainable: [vpm, resampler]`` and ``lr: {vpm: 2e-5, resampler: 1e-4}`` read like the paper's
recipe table. One ``freeze`` call applies it and reports what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn
from torch.distributed.fsdp._common_utils import clean_tensor_name

from assemblies.contrastive import OBJECTIVE_HEADS
from assemblies.mllm import SLOTS

BLOCKS = (*SLOTS, *OBJECTIVE_HEADS)
log = logging.getLogger(__name__)


@dataclass
class FreezeReport:
    """Parameter counts per block after ``freeze``: {block: (trainable, total)}."""

    counts: dict[str, tuple[int, int]]

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.counts.values())

    def __str__(self) -> str:
        return ", ".join(f"{b} {t:,}/{n:,}" for b, (t, n) in self.counts.items())


def _block(model: nn.Module, name: str) -> nn.Module:
    if name not in BLOCKS or not hasattr(model, name):
        raise ValueError(f"unknown block {name!r}; the assembly has {[b for b in BLOCKS if hasattr(model, b)]}")
    return getattr(model, name)


def freeze(model: nn.Module, trainable: list[str], lora_targets_llm: bool = False) -> FreezeReport:
    """Make exactly the blocks in ``trainable`` require grad (LoRA adapters stay trainable).

    Args:
        model: the assembly (attributes ``vpm``, ``resampler``, ``llm``).
        trainable: block names to train.
        lora_targets_llm: the LLM carries LoRA adapters; keep ``lora_`` parameters trainable even if
            ``llm`` is not in ``trainable`` (the base weights stay frozen, as in the official recipe).
    """
    for name in trainable:
        _block(model, name)
    counts = {}
    for name in BLOCKS:
        if not hasattr(model, name):
            continue
        block = getattr(model, name)
        for pname, param in block.named_parameters():
            param.requires_grad_(name in trainable or (lora_targets_llm and name == "llm" and "lora_" in pname))
        params = list(block.parameters())
        counts[name] = (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    report = FreezeReport(counts)
    if report.trainable == 0:
        raise ValueError(f"stage trains nothing: trainable={trainable}")
    log.info("trainable parameters: %s", report)
    return report


def param_groups(model: nn.Module, lr: dict[str, float], weight_decay: float = 0.0,
                 ndims: Mapping[str, int] | None = None) -> list[dict]:
    """One optimizer group per block (and per decay/no-decay), trainable parameters only.

    Biases and norm weights (1-D tensors) get no weight decay, the usual transformer convention.
    ``ndims`` (``"vpm.encoder.layers.0.mlp.fc1.weight" -> 2``) gives the dimensions of parameters that
    FSDP has turned into flat 1-D shards (names are compared without FSDP's wrapper prefixes).

    Raises:
        ValueError: a block has trainable parameters but no entry in ``lr``.
    """
    groups = []
    for name in BLOCKS:
        if not hasattr(model, name):
            continue
        named = [(n, p) for n, p in getattr(model, name).named_parameters() if p.requires_grad]
        if not named:
            continue
        if name not in lr:
            raise ValueError(f"block {name!r} is trainable but the stage sets no lr for it (lr: {dict(lr)})")
        dims = [(ndims or {}).get(f"{name}.{clean_tensor_name(n)}", p.ndim) for n, p in named]
        decay = [p for (_, p), ndim in zip(named, dims) if ndim > 1]
        no_decay = [p for (_, p), ndim in zip(named, dims) if ndim <= 1]
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, "/no_decay")):
            if params:
                groups.append({"params": params, "lr": float(lr[name]), "weight_decay": wd, "name": name + suffix})
    return groups


def add_lora(model: nn.Module, r: int = 64, alpha: int = 64, dropout: float = 0.05,
             target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> nn.Module:
    """Inject LoRA adapters into the LLM's attention projections, in place (official recipe: r=alpha=64).

    Only ``model.llm`` is adapted, so the resampler and vision blocks keep their plain keys, train
    fully when the stage lists them, and are saved as they are. ``merge_lora`` folds the adapters
    back before export.
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=list(target_modules))
    inject_adapter_in_model(config, model.llm)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into their base linear layers and remove them, so keys are official again."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.llm.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, child_name, child.get_base_layer())
    return model
