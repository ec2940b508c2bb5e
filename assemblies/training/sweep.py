"""Compare the runs of a sweep: a Markdown table and a bar chart from each run's ``metrics.json``.

Hydra calls ``SweepSummary.on_multirun_end`` after ``python tasks/train.py -m ...`` (registered in
conf/hydra/default.yaml); ``summarise(sweep_dir)`` does the same for any directory of runs.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# (metrics.json key, column title, format): what a user decides on. Throughput is samples/s: LLM
# tokens/s would favour a projector that makes more tokens per image (the MLP projector).
COLUMNS = (("figures_from", "figures from", "s"), ("wall_seconds", "wall s", ".0f"),
           ("samples_per_s", "samples/s", ".1f"), ("tokens_per_sample", "LLM tok/sample", ".0f"),
           ("peak_memory_mb", "peak MB", ".0f"), ("peak_memory_stage", "peak in", "s"),
           ("gen/short/acc", "short acc", ".3f"), ("gen/long/acc", "long acc", ".3f"), ("val/acc", "forced acc", ".3f"),
           ("rollout_generated_tokens", "RL tokens", ".0f"))
OPTIONAL = ("rollout_generated_tokens",)  # shown only when a run has it (a sweep over an RL stage)
PLOTTED = ("wall_seconds", "samples_per_s", "peak_memory_mb", "gen/short/acc", "gen/long/acc")


def _label(run: dict, common: set[str] = frozenset()) -> str:
    """The run's distinguishing overrides (those not shared by every run), e.g. ``resampler=mlp seed=1``."""
    parts = [o for o in run.get("overrides", []) if o not in common and not o.startswith(("hydra", "paths"))]
    return " ".join(parts) or run.get("dir", "?")


def _common_overrides(runs: list[dict]) -> set[str]:
    sets = [set(run.get("overrides", [])) for run in runs]
    return set.intersection(*sets) if len(sets) > 1 else set()


def load_runs(sweep_dir: str | Path) -> list[dict]:
    runs = []
    for path in sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        run = json.loads(path.read_text())
        run["dir"] = path.parent.name
        runs.append(run)
    return runs


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def task_columns(runs: list[dict]) -> list[tuple[str, str, float | None]]:
    """(metrics key, task, chance) of each task's accuracy column: short-mode generated answers, or the
    teacher-forced exact match for a task no run evaluated by generating."""
    found: dict[str, str] = {}
    for prefix in ("gen/short/", "val/"):
        for run in runs:
            for key in run:
                task = key[len(prefix):-len("/acc")] if key.startswith(prefix) and key.endswith("/acc") else ""
                if task and "/" not in task:
                    found.setdefault(task, key)
    chance = {task: next((r[f"chance/{task}"] for r in runs if r.get(f"chance/{task}") is not None), None)
              for task in found}
    return [(key, task, chance[task]) for task, key in sorted(found.items())]


def summarise(sweep_dir: str | Path) -> tuple[str, Path | None]:
    """Write ``summary.md`` and ``summary.png`` into ``sweep_dir``; returns (the table, the plot path)."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    tasks = task_columns(runs)
    columns = [c for c in COLUMNS if c[0] not in OPTIONAL or any(run.get(c[0]) is not None for run in runs)]
    titles = [title for _, title, _ in columns] + [f"{task} (chance {_fmt(chance, '.2f')})" for _, task, chance in tasks]
    lines = ["| run | " + " | ".join(titles) + " |", "|" + "---|" * (len(titles) + 1)]
    common = _common_overrides(runs)
    for run in runs:
        run["label"] = _label(run, common)
        cells = [_fmt(run.get(k), spec) for k, _, spec in columns] + [_fmt(run.get(k), ".3f") for k, _, _ in tasks]
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    methods = sorted({run["peak_memory_method"] for run in runs if run.get("peak_memory_method")})
    notes = ["", "Figures from the run's last stage (`figures from`); wall s: all its stages, evaluation included; "
             "per-task columns: accuracy of greedy short-mode answers (teacher-forced exact match where a run has none)."]
    notes += [f"Peak memory: the largest of the stages' peaks, each measured as {m}." for m in methods]
    table = "\n".join(lines + notes)
    (sweep_dir / "summary.md").write_text(table + "\n")
    if not runs:
        return table, None
    return table, _plot(runs, tasks, sweep_dir / "summary.png")


def _plot(runs: list[dict], tasks: list[tuple[str, str, float | None]], path: Path) -> Path:
    """One panel per plotted metric (runs that differ only by seed share a bar, the mean, with the seeds as
    dots) and one with every task's accuracy per run beside its chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[" ".join(p for p in run["label"].split() if not p.startswith("seed="))].append(run)
    names = list(groups)
    titles = {key: title for key, title, _ in COLUMNS}
    fig, axes = plt.subplots(1, len(PLOTTED) + 1, figsize=(3.6 * len(PLOTTED) + 7, 3.8),
                             gridspec_kw={"width_ratios": [1] * len(PLOTTED) + [2.5]})
    for ax, key in zip(axes, PLOTTED):
        for i, name in enumerate(names):
            values = _values(groups[name], key)
            if values:
                ax.bar(i, sum(values) / len(values), color=f"C{i}", alpha=0.6)
                ax.plot([i] * len(values), values, "k.", ms=5)
        ax.set_xticks(range(len(names)), [n or "default" for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_title(titles[key], fontsize=9)
    ax, width = axes[-1], 0.8 / max(len(names), 1)
    for t, (key, _, chance) in enumerate(tasks):
        for i, name in enumerate(names):
            values = _values(groups[name], key)
            if values:
                ax.bar(t + (i - (len(names) - 1) / 2) * width, sum(values) / len(values), width, color=f"C{i}",
                       alpha=0.6, label=(name or "default") if t == 0 else None)
        if chance is not None:
            ax.plot([t - 0.45, t + 0.45], [chance, chance], "k-", lw=1.5, label="chance" if t == 0 else None)
    ax.set_xticks(range(len(tasks)), [task for _, task, _ in tasks], rotation=40, ha="right", fontsize=7)
    ax.set(ylim=(0, 1), title="accuracy per task")
    if tasks:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _values(runs: list[dict], key: str) -> list[float]:
    return [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table, plot = summarise(config.hydra.sweep.dir)
        print(f"\nsweep summary ({config.hydra.sweep.dir}):\n{table}\nplot: {plot}", flush=True)
