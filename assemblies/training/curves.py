"""``curves.png``: what a run's CSV logs show, one panel per kind of number.

Row 1, one panel per stage: its training loss on its own scale (the contrastive loss of stage0, the
next-token loss of the LLM stages and the long-CoT traces differ by an order of magnitude).
Row 2, steps of all stages in sequence: image -> text retrieval of contrastive stages; teacher-forced
exact match per task; generated-answer accuracy per task in short and in long mode (points inside a
stage come from ``evaluation.every_n_steps``). Row 3: learning rate per block and gradient norm.
A task has the same colour in every panel; stage ends are dotted lines.
"""

from __future__ import annotations

from pathlib import Path

from assemblies.training.report import read_csv_metrics, series

Points = list[tuple[int, float]]


def _task_keys(rows: list[dict], prefix: str, suffix: str) -> list[str]:
    """Tasks with a logged ``{prefix}{task}{suffix}`` column (one level: ``val/<task>/acc``, not ``val/acc``)."""
    names = {k[len(prefix):-len(suffix)] for row in rows for k in row
             if k.startswith(prefix) and k.endswith(suffix) and len(k) > len(prefix) + len(suffix)}
    return sorted(name for name in names if "/" not in name)


def _collect(stage_dirs: list[Path]) -> dict:
    """Per-stage losses and, on the run's global step axis, every other series."""
    data = {"loss": {}, "retrieval": {}, "forced": {}, "short": {}, "long": {}, "lr": {}, "grad_norm": {},
            "boundaries": []}
    offset = 0
    for stage_dir in stage_dirs:
        rows = read_csv_metrics(stage_dir)
        loss = series(rows, "train/loss")
        data["loss"][stage_dir.name] = loss
        retrieval = bool(_task_keys(rows, "val/", "/chance"))  # RetrievalAccuracy logs the blind chance
        for task in _task_keys(rows, "val/", "/acc"):
            target = data["retrieval" if retrieval else "forced"].setdefault(task, [])
            target.extend((offset + s, v) for s, v in series(rows, f"val/{task}/acc"))
        for mode in ("short", "long"):
            for task in _task_keys(rows, f"gen/{mode}/", "/acc"):
                data[mode].setdefault(task, []).extend((offset + s, v) for s, v in series(rows, f"gen/{mode}/{task}/acc"))
        for key in {k for row in rows for k in row if k.startswith("lr-") and not k.endswith("/no_decay")}:
            data["lr"].setdefault(key.split("/", 1)[-1], []).extend((offset + s, v) for s, v in series(rows, key))
        data["grad_norm"].setdefault("all blocks", []).extend((offset + s, v) for s, v in series(rows, "train/grad_norm"))
        offset += max((s for s, _ in loss), default=0) + 1
        data["boundaries"].append((offset, stage_dir.name))
    return data


def plot_curves(stage_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Write ``out_dir/curves.png`` from the stages' CSV logs; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _collect(stage_dirs)
    # tab20's strong colours first, then its light ones; the answer tasks first, so that up to ten of
    # them are told apart by strong colours, and a task keeps its colour in every panel.
    answer_tasks = sorted({t for key in ("forced", "short", "long") for t in data[key]})
    tasks = answer_tasks + sorted(set(data["retrieval"]) - set(answer_tasks))
    palette = [*plt.get_cmap("tab20").colors[::2], *plt.get_cmap("tab20").colors[1::2]]
    colour = {task: palette[i % len(palette)] for i, task in enumerate(tasks)}
    columns = max(len(stage_dirs), 4)
    fig, axes = plt.subplots(3, columns, figsize=(3.4 * columns, 9.6), squeeze=False)
    for ax, stage_dir in zip(axes[0], stage_dirs):
        loss = data["loss"][stage_dir.name]
        ax.plot([s for s, _ in loss], [v for _, v in loss], lw=0.7, color="C0")
        ax.set(title=f"{stage_dir.name}: training loss", xlabel="step in stage")
    for ax in axes[0][len(stage_dirs):]:
        ax.axis("off")
    panels = [("retrieval", "contrastive retrieval (top-1)"), ("forced", "teacher-forced exact match"),
              ("short", "generated answers, short mode"), ("long", "generated answers, long (thinking) mode")]
    for ax, (key, title) in zip(axes[1], panels):
        for task, points in sorted(data[key].items()):
            points.sort()
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3, lw=1, color=colour[task],
                    label=task)
        ax.set(title=title, ylim=(-0.02, 1.02), xlabel="step (stages in sequence)", ylabel="accuracy")
        if data[key]:
            ax.legend(fontsize=6, ncol=2)
    for ax, key, title in ((axes[2][0], "lr", "learning rate per block"),
                           (axes[2][1], "grad_norm", "gradient norm (before clipping)")):
        for i, (name, points) in enumerate(sorted(data[key].items())):
            if points:
                points.sort()
                ax.plot([s for s, _ in points], [v for _, v in points], lw=1.0, color=f"C{i}", label=name,
                        ls=("-", "--", "-.", ":")[i % 4])  # blocks often share a rate: keep each line visible
        ax.set(title=title, yscale="log", xlabel="step (stages in sequence)")
        if any(data[key].values()):
            ax.legend(fontsize=7)
    for ax in [*axes[1][len(panels):], *axes[2][2:]]:
        ax.axis("off")
    for ax in [*axes[1][:len(panels)], *axes[2][:2]]:
        for end, _ in data["boundaries"][:-1]:
            ax.axvline(end, color="grey", lw=0.5, ls=":")
    fig.tight_layout()
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
