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

COLUMNS = (("val/acc", "held-out acc", ".3f"), ("tokens_per_sample", "LLM tok/sample", ".0f"),
           ("tokens_per_s", "tok/s", ".0f"), ("peak_memory_mb", "peak MB", ".0f"))


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


def summarise(sweep_dir: str | Path) -> tuple[str, Path | None]:
    """Write ``summary.md`` and ``summary.png`` into ``sweep_dir``; returns (the table, the plot path)."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    header = "| run | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    common = _common_overrides(runs)
    for run in runs:
        run["label"] = _label(run, common)
        lines.append(f"| {run['label']} | " + " | ".join(_fmt(run.get(k), spec) for k, _, spec in COLUMNS) + " |")
    table = "\n".join(lines)
    (sweep_dir / "summary.md").write_text(table + "\n")
    if not runs:
        return table, None
    return table, _plot(runs, sweep_dir / "summary.png")


def _plot(runs: list[dict], path: Path) -> Path:
    """One panel per metric; runs that differ only by seed share a bar (mean) with the seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[" ".join(p for p in run["label"].split() if not p.startswith("seed="))].append(run)
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.6))
    names = list(groups)
    for ax, (key, title, _) in zip(axes, COLUMNS):
        for i, name in enumerate(names):
            values = [r[key] for r in groups[name] if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
            if values:
                ax.bar(i, sum(values) / len(values), color=f"C{i}", alpha=0.6)
                ax.plot([i] * len(values), values, "k.", ms=5)
        ax.set_xticks(range(len(names)), [n or "default" for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table, plot = summarise(config.hydra.sweep.dir)
        print(f"\nsweep summary ({config.hydra.sweep.dir}):\n{table}\nplot: {plot}", flush=True)
