"""Load an HF SigLIP / SigLIP2 vision tower directory into the NaViT SigLIP block.

Accepts what transformers' ``save_pretrained`` writes for ``SiglipVisionModel``, ``SiglipModel``,
``Siglip2VisionModel`` or ``Siglip2Model``: ``config.json`` + ``model.safetensors`` (or a sharded
``model.safetensors.index.json``). Pickled weights (``*.bin``) are refused.

Conversions, each chosen so that the import is *exact* in a stated case:

- Keys: the part after ``vision_model.`` (full models) or the key itself (vision-only models). The
  text tower, ``logit_scale``/``logit_bias`` and the vision pooling head (``head.*``; MiniCPM-V feeds
  the per-patch features to its resampler, not a pooled vector) are dropped and listed as ignored.
- SigLIP2 patch embedding is a Linear over (y, x, c)-ordered patches; it becomes the Conv2d kernel
  [D, c, y, x] our (c, y, x) patch rows use.
- Patch size p != 14 (SigLIP2 and most SigLIP checkpoints use 16): the kernel is mapped to 14 px as
  ``K14 = A^T K_p`` with A the bilinear 14 -> p resize of a patch, so our tower on a 14-px patch gives
  exactly what the source gives on that patch resized to p px. Pass ``resize_patches=False`` to refuse.
- Position table: the source's g x g grid is resized onto the 70 x 70 NaViT grid the way the source
  resizes it at run time (SigLIP ``interpolate_pos_encoding``: bicubic; SigLIP2: bilinear with
  antialias; both align_corners=False), so a 70 x 70-patch input matches the source exactly. Other
  slice sizes use the official bucketed lookup on that table, which approximates the source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from assemblies.checkpoints.files import read_tensors
from blocks.vision.navit_siglip import NaViTSiglip, navit_siglip

log = logging.getLogger(__name__)

SUPPORTED = {"siglip": "siglip", "siglip_vision_model": "siglip",
             "siglip2": "siglip2", "siglip2_vision_model": "siglip2"}
DROPPED_PREFIXES = ("text_model.", "head.", "logit_scale", "logit_bias", "embeddings.position_ids")
PATCH_KEY = "embeddings.patch_embedding.weight"
POSITION_KEY = "embeddings.position_embedding.weight"


@dataclass
class SiglipImport:
    """What an import did: ``family`` (siglip/siglip2), ``loaded`` keys, ``ignored`` source keys, ``notes``."""

    family: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_vision_config(directory: Path) -> tuple[str, dict]:
    """(family, vision config dict with transformers' defaults filled in) of an HF SigLIP directory."""
    from transformers import AutoConfig  # local directory only: never downloads

    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory / 'config.json'} not found (expected an HF save_pretrained directory)")
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    family = SUPPORTED.get(config.model_type)
    if family is None:
        raise ValueError(f"{directory / 'config.json'}: model_type {config.model_type!r} is not one of "
                         f"{sorted(SUPPORTED)}")
    vision = getattr(config, "vision_config", config).to_dict()
    got = (vision["hidden_act"], vision["layer_norm_eps"], vision["num_channels"])
    if got != ("gelu_pytorch_tanh", 1e-6, 3):
        raise ValueError(f"{directory / 'config.json'}: the NaViT block is (gelu_pytorch_tanh, eps 1e-6, 3 channels); "
                         f"got {got}")
    return family, vision


def patch_resize_matrix(size: int, source_size: int) -> Tensor:
    """A [source_size^2, size^2]: column j = the bilinear resize of the size x size basis patch j."""
    basis = torch.eye(size * size, dtype=torch.float64).view(-1, 1, size, size)
    resized = F.interpolate(basis, size=(source_size, source_size), mode="bilinear", align_corners=False,
                            antialias=source_size < size)
    return resized.reshape(size * size, -1).T


def resize_patch_kernel(kernel: Tensor, size: int) -> Tensor:
    """[D, C, p, p] -> [D, C, size, size] with <x, K_size> == <resize_p(x), K_p> for every patch x."""
    d, c, p, _ = kernel.shape
    matrix = patch_resize_matrix(size, p)  # [p*p, size*size]
    return (kernel.double().reshape(d * c, p * p) @ matrix).reshape(d, c, size, size).to(kernel.dtype)


def resize_position_table(table: Tensor, grid: int, family: str) -> Tensor:
    """[g*g, D] -> [grid*grid, D], resized the way ``family`` resizes its own table at run time."""
    side = round(table.shape[0] ** 0.5)
    if side * side != table.shape[0]:
        raise ValueError(f"position table of {table.shape[0]} rows is not a square grid")
    if side == grid:
        return table
    image = table.T.reshape(1, -1, side, side).double()
    if family == "siglip":
        image = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=False)
    else:
        image = F.interpolate(image, size=(grid, grid), mode="bilinear", align_corners=False, antialias=True)
    return image.reshape(-1, grid * grid).T.to(table.dtype).contiguous()


def convert_state_dict(source: dict[str, Tensor], family: str, patch_size: int, target_patch: int,
                       grid: int, resize_patches: bool = True) -> tuple[dict[str, Tensor], SiglipImport]:
    """Map an HF SigLIP/SigLIP2 state dict onto the NaViT block's names and shapes."""
    report = SiglipImport(family)
    converted: dict[str, Tensor] = {}
    for key, value in source.items():
        name = key.split("vision_model.", 1)[1] if "vision_model." in key else key
        if name.startswith(DROPPED_PREFIXES) or key.startswith(DROPPED_PREFIXES):
            report.ignored.append(key)
        else:
            converted[name] = value
    if PATCH_KEY in converted and family == "siglip2":
        d = converted[PATCH_KEY].shape[0]
        converted[PATCH_KEY] = converted[PATCH_KEY].view(d, patch_size, patch_size, 3).permute(0, 3, 1, 2).contiguous()
        report.notes.append("patch embedding: Linear over (y, x, c) patches -> Conv2d kernel [D, c, y, x]")
    if PATCH_KEY in converted and patch_size != target_patch:
        if not resize_patches:
            raise ValueError(f"source patch size {patch_size} != {target_patch}; pass resize_patches=True to map "
                             f"the kernel (exact for patches resized {target_patch}->{patch_size} px bilinearly)")
        converted[PATCH_KEY] = resize_patch_kernel(converted[PATCH_KEY], target_patch)
        report.notes.append(f"patch kernel {patch_size}px -> {target_patch}px: K = A^T K_src, "
                            f"A = bilinear {target_patch}->{patch_size} patch resize")
    if POSITION_KEY in converted:
        side = round(converted[POSITION_KEY].shape[0] ** 0.5)
        converted[POSITION_KEY] = resize_position_table(converted[POSITION_KEY], grid, family)
        if side != grid:
            mode = "bicubic" if family == "siglip" else "bilinear+antialias"
            report.notes.append(f"position table {side}x{side} -> {grid}x{grid} ({mode}, align_corners=False)")
    return converted, report


def load_siglip_vision(directory: str | Path, tower: NaViTSiglip | None = None, *, attn_backend: str = "auto",
                       resize_patches: bool = True) -> tuple[NaViTSiglip, SiglipImport]:
    """Build (or fill) a NaViT SigLIP tower from an HF SigLIP/SigLIP2 directory.

    Args:
        directory: ``save_pretrained`` output (config.json + safetensors).
        tower: an existing tower to fill (e.g. inside a MiniCPMV); built from the config when None.
        attn_backend: for the built tower.
        resize_patches: map a non-14 px patch kernel to 14 px (see module docstring) instead of refusing.

    Returns:
        (tower, report). Raises ValueError naming every missing/unexpected/mis-shaped key.
    """
    directory = Path(directory)
    family, vision = read_vision_config(directory)
    if tower is None:
        tower = navit_siglip(vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"],
                             vision["intermediate_size"], attn_backend=attn_backend)
    converted, report = convert_state_dict(read_tensors(directory), family, vision["patch_size"],
                                           tower.patch_size, tower.embeddings.position_grid, resize_patches)
    expected = tower.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mis_shaped = sorted(f"{k}: {tuple(converted[k].shape)} != {tuple(expected[k].shape)}"
                        for k in set(expected) & set(converted) if converted[k].shape != expected[k].shape)
    if missing or unexpected or mis_shaped:
        raise ValueError(f"{directory}: cannot load into the NaViT tower; missing {missing}, "
                         f"unexpected {unexpected}, mis-shaped {mis_shaped}")
    tower.load_state_dict(converted, strict=True)
    report.loaded = sorted(converted)
    log.info("loaded %d %s tensors from %s (ignored %d: text tower / pooling head); %s", len(report.loaded),
             family, directory, len(report.ignored), "; ".join(report.notes) or "no conversion needed")
    return tower, report
