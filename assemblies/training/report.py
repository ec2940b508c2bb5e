"""What a run reports: what each stage trains on, per-stage tables, a metrics JSON, and the export
(the curves: ``assemblies.training.curves``)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from assemblies.evaluation import Evaluation, mean_accuracy

log = logging.getLogger(__name__)


def read_csv_metrics(stage_dir: Path) -> list[dict[str, str]]:
    """The CSV-logged rows of every attempt at the stage (first run, resumes), in attempt order."""
    rows = []
    for path in sorted(stage_dir.glob("csv/*/metrics.csv")):
        with path.open() as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]


def stage_intro(stage: DictConfig, corpora: DictConfig, seen: set[str]) -> dict:
    """What a stage is about to train on: its description, objective, trainable blocks, data mix, and the
    corpora no earlier stage of the run trained on (described by their options, e.g. ``reasoning``)."""
    mix = {name: float(weight) for name, weight in stage.data.mix.items() if weight}
    new = [_corpus_label(name, corpora.get(name)) for name in mix if name not in seen]
    return {"description": str(stage.get("description") or ""), "objective": _objective(stage),
            "trainable": list(stage.trainable), "data_mix": mix, "new_data": new,
            "max_steps": int(stage.max_steps), "batch_size": int(stage.batch_size)}


def _objective(stage: DictConfig) -> str:
    if stage.get("objective") is None:
        return "next-token loss on the answers"
    return f"{str(stage.objective.get('_target_', 'own')).rsplit('.', 1)[-1]} loss"


def _corpus_label(name: str, node: DictConfig | None) -> str:
    """``scenes_cot (scenes, reasoning=True)``: the corpus and what sets it apart (page layout and corruption left out)."""
    if node is None:
        return name
    parts = [str(node.name)] if node.get("name") not in (None, name) else []
    parts += [f"{k}={v}" for k, v in node.items() if not str(k).startswith("_") and k not in ("name", "corruption", "layout")]
    return f"{name} ({', '.join(parts)})" if parts else name


def intro_text(name: str, intro: dict) -> str:
    mix = ", ".join(f"{corpus} {weight:.2f}" for corpus, weight in intro["data_mix"].items())
    lines = [f"-- {name}: {intro['description']}",
             f"   {intro['objective']}; trains {', '.join(intro['trainable'])}; {intro['max_steps']} steps of up to "
             f"{intro['batch_size']} samples; data mix: {mix}"]
    if intro["new_data"]:
        lines.append(f"   data no earlier stage trained on: {', '.join(intro['new_data'])}")
    return "\n".join(lines)


def stage_result(name: str, stage_dir: Path, heldout: dict, chance: dict, throughput: dict, seconds: float,
                 trainable: int, steps: int, finished: bool, generation: Evaluation | None = None,
                 eval_seconds: float = 0.0, intro: dict | None = None) -> dict:
    """The numbers a stage reports (also written as ``<stage>/result.json``).

    ``heldout``: the teacher-forced validation metrics; ``generation``: the stage-end generation-based
    evaluation (``assemblies.evaluation``); ``eval_seconds``: time spent generating for it (in-stage
    evaluations included); ``intro``: ``stage_intro``.
    """
    losses = [v for _, v in series(read_csv_metrics(stage_dir), "train/loss")]
    window = max(1, min(10, len(losses) // 5 or 1))  # mean over a few steps: single-step losses are noisy
    tasks = {}
    for task, chance_acc in chance.items():
        tasks[task] = {"acc": heldout.get(f"val/{task}/acc"), "anls": heldout.get(f"val/{task}/anls"),
                       "cer": heldout.get(f"val/{task}/cer"), "chance": chance_acc}
    scores = generation.scores if generation is not None else []
    for score in scores:
        tasks.setdefault(score.task, {"acc": None, "anls": None, "cer": None, "chance": score.chance})
        tasks[score.task][score.mode] = {"acc": score.accuracy, "stderr": score.stderr, "samples": score.samples,
                                         "tokens": score.mean_generated_tokens, "truncated": score.truncation_rate,
                                         "format_fail": score.format_failure_rate}
    return {"stage": name, "steps": steps, "finished": finished, "seconds": round(seconds, 1),
            "eval_seconds": round(eval_seconds, 3), "trainable_params": trainable,  # ms: a tiny evaluation is not 0
            "loss_start": sum(losses[:window]) / window if losses else None,
            "loss_end": sum(losses[-window:]) / window if losses else None,
            "heldout_acc": heldout.get("val/acc"),
            "generation_acc": {mode: mean_accuracy(scores, mode) for mode in dict.fromkeys(s.mode for s in scores)},
            "tasks": tasks, **throughput, **(intro or {})}


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def stage_table(result: dict, previous: dict | None = None) -> str:
    """A plain-text table: loss start -> end, throughput, memory, and per held-out task: chance, the
    teacher-forced accuracy and the generated answers' accuracy ± standard error in each mode, with its
    change from ``previous`` in standard errors where both stages scored the same held-out records."""
    memory = result.get("peak_memory_mb")
    lines = [f"== {result['stage']}: {result['steps']} steps in {result['seconds']:.0f} s "
             f"({result.get('eval_seconds', 0):.0f} s of it generating held-out answers), "
             f"{result['trainable_params']:,} trainable params",
             f"   loss {_fmt(result['loss_start'])} -> {_fmt(result['loss_end'])}   "
             f"{_fmt(result.get('samples_per_s'), '.1f')} samples/s   {_fmt(result.get('tokens_per_s'), '.0f')} tokens/s   "
             f"{_fmt(result.get('tokens_per_sample'), '.0f')} LLM tokens/sample   peak {_fmt(memory, '.0f')} MB"]
    if (note := _loss_jump(result, previous)) is not None:
        lines.append(f"   {note}")
    modes = [m for m in ("short", "long") if any(m in t for t in result["tasks"].values())]
    before = (previous or {}).get("tasks", {})
    changes = {(task, mode): change_in_se(m.get(mode), before.get(task, {}).get(mode))
               for task, m in result["tasks"].items() for mode in modes}
    compared = any(z is not None for z in changes.values())
    header = f"   {'held-out task':<18}{'chance':>7}{'forced':>8}"
    header += "".join(f"{mode:>8}{'±se':>6}{'tok':>6}{'fmt!':>6}" + (f"{'Δ/se':>6}" if compared else "") for mode in modes)
    lines.append(header + f"{'anls':>7}{'cer':>7}")
    for task, m in result["tasks"].items():
        line = f"   {task:<18}{_fmt(m['chance']):>7}{_fmt(m['acc']):>8}"
        for mode in modes:
            g = m.get(mode) or {}
            line += (f"{_fmt(g.get('acc')):>8}{_fmt(g.get('stderr'), '.2f'):>6}{_fmt(g.get('tokens'), '.0f'):>6}"
                     f"{_fmt(g.get('format_fail'), '.2f'):>6}")
            line += f"{_fmt(changes[task, mode], '+.1f'):>6}" if compared else ""
        lines.append(line + f"{_fmt(m['anls']):>7}{_fmt(m['cer']):>7}")
    if modes:
        lines.append("   forced: teacher-forced exact match; short/long: greedy generated answers, accuracy ± standard "
                     "error, mean generated tokens (tok), share not well-formed (fmt!)")
    if compared:
        lines.append(f"   Δ/se: change from {previous['stage']} on the same held-out records, in standard errors of the "
                     "difference (|Δ/se| >= 2: more than noise)")
    return "\n".join(lines)


def change_in_se(now: dict | None, before: dict | None) -> float | None:
    """(accuracy - previous accuracy) / sqrt(se² + previous se²) of one task and mode, where both stages
    scored the same number of held-out records (the same records: the held-out stream is seeded); None
    otherwise, or where both standard errors are 0 and the accuracies differ."""
    if not now or not before or not now.get("samples") or now["samples"] != before.get("samples") \
            or None in (now.get("acc"), before.get("acc")):
        return None
    se = math.hypot(now["stderr"], before["stderr"])
    if se == 0:
        return 0.0 if now["acc"] == before["acc"] else None
    return (now["acc"] - before["acc"]) / se


def _loss_jump(result: dict, previous: dict | None) -> str | None:
    """Why a stage's loss starts well above where the previous stage ended (different data or objective)."""
    start, end = result.get("loss_start"), (previous or {}).get("loss_end")
    if start is None or end is None or start < 1.5 * end:
        return None
    if result.get("objective") != previous.get("objective"):
        why = f"another objective ({result.get('objective')} after {previous.get('objective')}): not comparable"
    elif result.get("new_data"):
        why = f"data {previous['stage']} did not train on: {', '.join(result['new_data'])}"
    else:
        why = "the same kind of data in another mix; check the learning rate"
    return f"loss starts at {start:.2f}, {previous['stage']} ended at {end:.2f}: {why}"


def run_summary(results: list[dict], cfg: DictConfig) -> dict:
    """Run-level metrics, flattened for sweep summaries: the last stage's accuracy and throughput (its name
    in ``figures_from``), peak memory per stage, and the wall time of all stages."""
    summary = {"stages": results}
    if results:
        last = results[-1]
        peaks = {r["stage"]: r.get("peak_memory_mb") for r in results if r.get("peak_memory_mb") is not None}
        summary.update({"figures_from": last["stage"], "val/acc": last["heldout_acc"],
                        "samples_per_s": last.get("samples_per_s"), "tokens_per_s": last.get("tokens_per_s"),
                        "tokens_per_sample": last.get("tokens_per_sample"),
                        "wall_seconds": round(sum(r["seconds"] for r in results), 1),
                        "eval_seconds": round(sum(r.get("eval_seconds", 0.0) for r in results), 1),
                        "peak_memory_mb_by_stage": peaks, "peak_memory_method": last.get("peak_memory_method"),
                        "peak_memory_mb": max(peaks.values(), default=None),
                        "peak_memory_stage": max(peaks, key=peaks.get) if peaks else None})
        summary.update({f"val/{task}/acc": m["acc"] for task, m in last["tasks"].items()})
        summary.update({f"chance/{task}": m["chance"] for task, m in last["tasks"].items()})
        summary.update({k: v for k, v in last.items() if k.startswith("rollout_generated_tokens")})  # RL stages
        for mode, acc in (last.get("generation_acc") or {}).items():
            summary[f"gen/{mode}/acc"] = acc
            summary.update({f"gen/{mode}/{task}/acc": m[mode]["acc"] for task, m in last["tasks"].items() if mode in m})
    summary["seed"] = int(cfg.seed)
    summary["choices"], summary["overrides"] = _hydra_choices()
    return summary


def announce(text: str) -> None:
    """Print ``text`` and write it to the run's log file(s) (the file handlers of the root logger, e.g.
    Hydra's ``<run>/train.log``), without a second copy on the console."""
    print(text, flush=True)
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "\n%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


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
