"""What a run reports: per-stage tables, a metrics JSON, loss/metric curves as PNG, and the export."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

log = logging.getLogger(__name__)


def _read_csv_metrics(stage_dir: Path) -> list[dict[str, str]]:
    """The CSV-logged rows of every attempt at the stage (first run, resumes), in attempt order."""
    rows = []
    for path in sorted(stage_dir.glob("csv/*/metrics.csv")):
        with path.open() as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def _series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]


def stage_result(name: str, stage_dir: Path, heldout: dict, chance: dict, throughput: dict, seconds: float,
                 trainable: int, steps: int, finished: bool) -> dict:
    """The numbers a stage reports (also written as ``<stage>/result.json``)."""
    losses = [v for _, v in _series(_read_csv_metrics(stage_dir), "train/loss")]
    window = max(1, min(10, len(losses) // 5 or 1))  # mean over a few steps: single-step losses are noisy
    tasks = {}
    for task, chance_acc in chance.items():
        tasks[task] = {"acc": heldout.get(f"val/{task}/acc"), "anls": heldout.get(f"val/{task}/anls"),
                       "cer": heldout.get(f"val/{task}/cer"), "chance": chance_acc}
    return {"stage": name, "steps": steps, "finished": finished, "seconds": round(seconds, 1),
            "trainable_params": trainable,
            "loss_start": sum(losses[:window]) / window if losses else None,
            "loss_end": sum(losses[-window:]) / window if losses else None,
            "heldout_acc": heldout.get("val/acc"), "tasks": tasks, **throughput}


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def stage_table(result: dict) -> str:
    """A short plain-text table: loss start -> end, throughput, held-out accuracy per task vs chance."""
    lines = [f"== {result['stage']}: {result['steps']} steps in {result['seconds']:.0f} s, "
             f"{result['trainable_params']:,} trainable params",
             f"   loss {_fmt(result['loss_start'])} -> {_fmt(result['loss_end'])}   "
             f"{_fmt(result.get('tokens_per_s'), '.0f')} tokens/s   "
             f"{_fmt(result.get('tokens_per_sample'), '.0f')} LLM tokens/sample",
             f"   {'held-out task':<18}{'acc':>7}{'chance':>8}{'anls':>7}{'cer':>7}"]
    for task, m in result["tasks"].items():
        lines.append(f"   {task:<18}{_fmt(m['acc']):>7}{_fmt(m['chance']):>8}{_fmt(m['anls']):>7}{_fmt(m['cer']):>7}")
    return "\n".join(lines)


def run_summary(results: list[dict], cfg: DictConfig) -> dict:
    """Run-level metrics: the last stage's numbers, flattened for sweep summaries."""
    summary = {"stages": results}
    if results:
        last = results[-1]
        summary.update({"val/acc": last["heldout_acc"], "tokens_per_s": last.get("tokens_per_s"),
                        "tokens_per_sample": last.get("tokens_per_sample"),
                        "peak_memory_mb": max(r.get("peak_memory_mb") or 0 for r in results)})
        summary.update({f"val/{task}/acc": m["acc"] for task, m in last["tasks"].items()})
    summary["seed"] = int(cfg.seed)
    summary["choices"], summary["overrides"] = _hydra_choices()
    return summary


def _hydra_choices() -> tuple[dict, list]:
    """Group choices and command-line overrides of the running Hydra job ({} and [] outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, []
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items()
               if not k.startswith("hydra/") and "@" not in k and v is not None}  # top-level groups only
    return choices, list(hydra_cfg.overrides.task)


def export(model: nn.Module, out_dir: Path, tokenizer, processor_config, dtype: torch.dtype) -> Path | None:
    """The final weights as a self-contained model directory in the official MiniCPM-V 4.5 layout
    (``export_model_dir``: weights, tokenizer, processor and generation settings).

    Returns None (with a warning) for topologies the official layout cannot express, e.g. an MLP
    projector in the resampler slot; their weights are still in each stage's ``model.safetensors``.
    """
    from assemblies.checkpoints.model_dir import export_model_dir

    try:
        return Path(export_model_dir(model, out_dir, tokenizer, processor_config, dtype=dtype))
    except ValueError as error:
        log.warning("no official-format export: %s (the stage weights are in <stage>/model.safetensors)", error)
        return None


def plot_curves(stage_dirs: list[Path], out_dir: Path) -> list[Path]:
    """``curves.png``: training loss and held-out accuracy per task across the stages (stage ends dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2))
    offset, accuracy = 0, {}
    for stage_dir in stage_dirs:
        rows = _read_csv_metrics(stage_dir)
        loss = _series(rows, "train/loss")
        if loss:
            ax_loss.plot([offset + s for s, _ in loss], [v for _, v in loss], label=stage_dir.name, lw=0.8)
        for key in {k for r in rows for k in r if k.startswith("val/") and k.endswith("/acc") and k != "val/acc"}:
            accuracy.setdefault(key[4:-4], []).extend((offset + s, v) for s, v in _series(rows, key))
        offset += max((s for s, _ in loss), default=0) + 1
        for ax in (ax_loss, ax_acc):
            ax.axvline(offset, color="grey", lw=0.5, ls=":")
    for task, points in sorted(accuracy.items()):
        points.sort()
        ax_acc.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3, lw=1, label=task)
    ax_loss.set(xlabel="step (stages in sequence)", ylabel="train loss", yscale="log", title="training loss")
    ax_acc.set(xlabel="step (stages in sequence)", ylabel="exact match", ylim=(0, 1), title="held-out accuracy")
    ax_loss.legend(fontsize=7)
    if accuracy:
        ax_acc.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
