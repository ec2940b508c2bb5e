"""Parameter counts and training-memory estimates per stage, computed on a meta-device model.

Memory model (per GPU, bytes; activations and temporary buffers are not included):

- weights: every parameter, 2 B under ``bf16-*`` precisions, 4 B under ``32-true``;
- gradients: trainable parameters only, in the weight dtype;
- optimizer: AdamW's two moments in fp32 (8 B) per trainable parameter, plus a 4 B fp32 master copy
  under ``bf16-mixed`` (weights are computed in bf16 but updated in fp32);
- FSDP full-shard over N GPUs divides all three by N.

Stages are data: each ``conf/stage/*.yaml`` gives ``name``, ``trainable`` (blocks among vpm,
resampler, llm) and optionally ``lora: {r, target_modules}`` (adapters on the LLM's linear layers,
always trainable). Without stage files the paper's stages below are used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from assemblies.contrastive import OBJECTIVE_HEADS
from assemblies.mllm import MiniCPMV
from assemblies.presets import CONF_DIR, build_model
from assemblies.training.stages import BLOCKS

log = logging.getLogger(__name__)
GIB, MIB = 1024 ** 3, 1024 ** 2
WEIGHT_BYTES = {"bf16-mixed": 2, "bf16-true": 2, "32-true": 4}
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class Stage:
    """What a training stage trains: whole blocks and, optionally, LoRA adapters on the LLM."""

    name: str
    trainable: list[str]
    lora: dict = field(default_factory=dict)


# The paper's pre-training stages and SFT (MiniCPM-V 4.5 report, §2.2-2.3), for when conf/stage is empty.
PAPER_STAGES = [
    Stage("pretrain_1_warmup", ["resampler"]),
    Stage("pretrain_2_perception", ["vpm", "resampler"]),
    Stage("pretrain_3_end_to_end", ["vpm", "resampler", "llm"]),
    Stage("sft", ["vpm", "resampler", "llm"]),
    Stage("sft_lora_r64", ["vpm", "resampler"], {"r": 64}),
]


def read_stages(stage_dir: Path) -> tuple[list[Stage], list[str]]:
    """Stages of ``stage_dir/*.yaml`` and the files skipped (no ``name``/``trainable``: not a stage).

    Raises:
        ValueError: a stage lists an unknown block (the message names the file).
    """
    stages, skipped = [], []
    for path in sorted(stage_dir.glob("*.yaml")):
        node = OmegaConf.load(path)
        if not isinstance(node, DictConfig) or "name" not in node or "trainable" not in node:
            skipped.append(path.name)
            log.info("%s has no name/trainable: not a stage, skipped", path)
            continue
        trainable = list(node.trainable)
        unknown = sorted(set(trainable) - set(BLOCKS))
        if unknown:
            raise ValueError(f"{path}: trainable lists unknown blocks {unknown}; choose among {list(BLOCKS)}")
        lora = OmegaConf.to_container(node.lora, resolve=True) if node.get("lora") else {}
        stages.append(Stage(str(node.name), trainable, lora))
    return stages, skipped


def lora_params(llm: nn.Module, r: int, target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS) -> int:
    """Adapter parameters r * (in + out) of every linear layer of ``llm`` named in ``target_modules``."""
    return sum(r * (m.in_features + m.out_features) for name, m in llm.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in target_modules)


def stage_memory(model: MiniCPMV, stage: Stage, precision: str, gpus: list[int]) -> dict:
    """Trainable parameters and memory (bytes) of ``stage``: total and per GPU for each FSDP size."""
    if precision not in WEIGHT_BYTES:
        raise ValueError(f"precision {precision!r} not modelled; choose one of {sorted(WEIGHT_BYTES)}")
    counts = model.num_params()
    adapters = lora_params(model.llm, int(stage.lora.get("r", 64)),
                           tuple(stage.lora.get("target_modules", DEFAULT_LORA_TARGETS))) if stage.lora else 0
    # Objective heads (a few hundred thousand parameters, dropped after their stage) are left out.
    trainable = sum(counts[slot] for slot in stage.trainable if slot not in OBJECTIVE_HEADS) + adapters
    width = WEIGHT_BYTES[precision]
    weights = (counts["total"] + adapters) * width
    grads = trainable * width
    optimizer = trainable * (8 + (4 if precision == "bf16-mixed" else 0))
    total = weights + grads + optimizer
    return {"name": stage.name, "trainable_blocks": stage.trainable, "lora_params": adapters,
            "trainable_params": trainable, "weights": weights, "grads": grads, "optimizer": optimizer,
            "total": total, "per_gpu": {n: total / n for n in gpus}}


def inspect_model(cfg: DictConfig) -> dict:
    """Build ``cfg.model`` on meta and report parameters per block and memory per training stage.

    ``cfg`` needs ``model``, ``precision`` and ``gpus``; stages come from ``cfg.stage`` when one is
    selected, else from ``cfg.stage_dir`` (default ``conf/stage``), else ``PAPER_STAGES``.
    """
    model = build_model(cfg, device="meta")
    total, trainable = model.num_params(), model.num_params(trainable_only=True)
    skipped: list[str] = []
    if cfg.get("stage"):
        stages = [Stage(str(cfg.stage.name), list(cfg.stage.trainable),
                        OmegaConf.to_container(cfg.stage.lora) if cfg.stage.get("lora") else {})]
    else:
        stages, skipped = read_stages(Path(cfg.get("stage_dir") or CONF_DIR / "stage"))
    stages = stages or PAPER_STAGES
    gpus = [int(n) for n in cfg.gpus]
    return {"params": {k: {"total": total[k], "trainable": trainable[k]} for k in total},
            "precision": cfg.precision, "gpus": gpus, "skipped_stage_files": skipped,
            "stages": [stage_memory(model, s, cfg.precision, gpus) for s in stages]}


def format_report(report: dict) -> str:
    """The two tables ``tasks/inspect.py`` prints: parameters per block, memory per stage."""
    lines = [f"{'block':<12}{'params':>16}{'trainable':>16}"]
    lines += [f"{name:<12}{row['total']:>16,}{row['trainable']:>16,}" for name, row in report["params"].items()]
    biggest = max((s["total"] for s in report["stages"]), default=0)
    unit, scale = ("GiB", GIB) if biggest >= GIB else ("MiB", MIB)  # tiny models read in MiB
    master = " + fp32 master" if report["precision"] == "bf16-mixed" else ""
    lines += ["", f"training memory, {report['precision']}, FSDP full-shard, {unit} (weights + grads + AdamW{master};"
                  " activations not included)",
              f"{'stage':<24}{'trainable':<24}{'params':>16}{'weights':>10}{'grads':>9}{'optim':>9}{'total':>9}"
              + "".join(f"{f'/GPU N={n}':>12}" for n in report["gpus"])]
    for s in report["stages"]:
        blocks = "+".join(s["trainable_blocks"]) + ("+lora" if s["lora_params"] else "")
        lines.append(f"{s['name']:<24}{blocks:<24}{s['trainable_params']:>16,}{s['weights'] / scale:>10.1f}"
                     f"{s['grads'] / scale:>9.1f}{s['optimizer'] / scale:>9.1f}{s['total'] / scale:>9.1f}"
                     + "".join(f"{s['per_gpu'][n] / scale:>12.1f}" for n in report["gpus"]))
    if report["skipped_stage_files"]:
        lines.append(f"(skipped, not stages: {', '.join(report['skipped_stage_files'])})")
    return "\n".join(lines)
