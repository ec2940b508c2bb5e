"""Build assemblies from the Hydra configs in ``conf/``; Python presets and the CLI share one code path.

``build_mllm`` is what the ``model`` node's ``_target_`` calls: Hydra instantiates the three slot
configs recursively (each with its own builder) and hands the modules over. The Python presets
compose the same files with the compose API, so ``mcpv45(scale="tiny", overrides=["resampler=mlp"])``
builds exactly what ``python tasks/train.py +assembly=mcpv45 scale=tiny resampler=mlp`` trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from assemblies.mllm import MiniCPMV
from assemblies.training.config import register_schemas
from blocks.slots import LLMSlot, ResamplerSlot, VisionSlot

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def build_mllm(vision: VisionSlot, resampler: ResamplerSlot, llm: LLMSlot) -> MiniCPMV:
    """The MiniCPM-V assembly from built slot modules (the ``model`` node's ``_target_``)."""
    return MiniCPMV(vpm=vision, resampler=resampler, llm=llm)


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The composed config of ``conf/<config_name>.yaml`` with command-line style ``overrides``, typed by
    the same schemas as the CLI's."""
    register_schemas()
    if GlobalHydra.instance().is_initialized():  # inside a @hydra.main task: reuse its search path
        return compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def build_model(cfg: DictConfig, device: str | torch.device = "cpu") -> MiniCPMV:
    """Instantiate ``cfg.model`` with parameters created on ``device`` (``meta``: shapes only, instant)."""
    with torch.device(device):
        return instantiate(cfg.model)


def mcpv45(scale: str = "full", overrides: Sequence[str] = (), device: str | torch.device = "meta") -> MiniCPMV:
    """MiniCPM-V 4.5 (``+assembly=mcpv45``) at ``scale`` (``full``: 8,695,895,280 parameters).

    Args:
        scale: a ``conf/scale`` option (``full``, ``tiny``), which picks the recipe ``conf/recipe/mcpv45_<scale>.yaml``.
        overrides: further Hydra overrides, e.g. ``["resampler=mlp", "dims.llm_layers=4"]``.
        device: where parameters are created; the default ``meta`` allocates nothing.
    """
    return build_model(compose_config(["+assembly=mcpv45", f"scale={scale}", *overrides]), device)


def mcpv45_tiny(overrides: Sequence[str] = (), device: str | torch.device = "cpu") -> MiniCPMV:
    """MiniCPM-V 4.5 topology at test size (random init on CPU): forward + backward in milliseconds."""
    return mcpv45("tiny", overrides, device)
