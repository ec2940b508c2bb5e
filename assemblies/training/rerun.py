"""Rerunning into a run directory: a stage is reused only under the settings that trained it.

Every stage a run trains gets ``<stage>/config.yaml``, the resolved config of the run that started
(or resumed) it. Before a rerun reuses a stage (its weights, or its ``last.ckpt`` to resume from),
the settings that shape its weights are compared with that record: every setting except those in
``WEIGHT_NEUTRAL``, restricted to the stage's own node (``stages.<name>``) and to the corpora of its
mix (``data.corpora.<corpus>``). A difference stops the run naming the keys, unless
``pipeline.restart_changed``: then the changed stages and every stage after them in the recipe
(which start from their weights) are deleted and trained again. A stage trained before these records
existed is compared with the run directory's ``config.yaml``.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from assemblies.training.checkpointing import atomic_path
from assemblies.training.config import recipe_stages, run_config_yaml
from assemblies.training.weights import WEIGHTS_FILE

log = logging.getLogger(__name__)
RECORD = "config.yaml"
ABSENT = "(absent)"
# Settings that change what is logged, evaluated or kept on disk, or how fast, but not the weights
# (tests/assemblies/training/test_rerun.py trains with one of each kind changed and gets the same weights;
# threads and data.num_workers change the compute-thread count, hence float rounding only).
WEIGHT_NEUTRAL = ("task_name", "optimized_metric", "threads", "paths", "logger", "pipeline", "evaluation",
                  "callbacks.model_checkpoint", "callbacks.progress_bar", "callbacks.lr_monitor", "callbacks.grad_norm",
                  "data.heldout", "data.heldout_size", "data.eval_batch_size", "data.num_workers",
                  "trainer.enable_progress_bar", "trainer.log_every_n_steps", "trainer.enable_model_summary",
                  "trainer.limit_val_batches", "trainer.detect_anomaly", "stages.*.heldout", "stages.*.description",
                  "stages.*.evaluation")


def has_state(stage_dir: Path) -> bool:
    """The stage has trained here: final weights, a result, or a checkpoint to resume from."""
    return ((stage_dir / WEIGHTS_FILE).is_file() or (stage_dir / "result.json").is_file()
            or any((stage_dir / "checkpoints").glob("*.ckpt")))


def finished(stage_dir: Path) -> bool:
    """What the pipeline reuses without training (with ``pipeline.resume``)."""
    return (stage_dir / "result.json").is_file() and (stage_dir / WEIGHTS_FILE).is_file()


def resolved(cfg: DictConfig, stage: str) -> dict:
    """``cfg`` with the run's stages and ``stage`` as its YAML record reads back (the same types on both sides).

    A stage the run skips may name an input left unset (``run_config_yaml``): then its node is one value
    saying so, which differs from any record.
    """
    run = cfg.copy()
    with open_dict(run):
        run.pipeline.stages = list(dict.fromkeys([*cfg.pipeline.stages, stage]))
    try:
        return yaml.safe_load(run_config_yaml(run))
    except OmegaConfBaseException as error:
        with open_dict(run):
            run.stages[stage] = {"unresolved": str(error).splitlines()[0]}
        return yaml.safe_load(run_config_yaml(run))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf (lists are leaves)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _neutral(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(key, pattern + ".*")
               for pattern in WEIGHT_NEUTRAL)


def _mix(config: dict, stage: str) -> set[str]:
    mix = (((config.get("stages") or {}).get(stage) or {}).get("data") or {}).get("mix") or {}
    return {name for name, weight in mix.items() if weight}


def stage_changes(stored: dict, current: dict, stage: str) -> list[tuple[str, Any, Any]]:
    """(key, stored value, current value) of each setting that shapes ``stage``'s weights and differs."""
    old, new = flatten(stored), flatten(current)
    corpora = _mix(stored, stage) | _mix(current, stage)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, ABSENT), new.get(key, ABSENT)
        parts = key.split(".")
        other_stage = parts[0] == "stages" and parts[1:2] != [stage]
        other_corpus = parts[:2] == ["data", "corpora"] and (len(parts) < 3 or parts[2] not in corpora)
        if before != after and not _neutral(key) and not other_stage and not other_corpus:
            changes.append((key, before, after))
    return changes


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refusal(output_dir: Path, changed: dict[str, list], stale: list[str]) -> str:
    lines = [f"{output_dir} holds stages trained with other settings than this run's; reusing them would "
             "report settings that did not produce their weights:"]
    grouped: dict[tuple, list[str]] = {}  # a global setting changes every stage alike: one line
    for name, changes in changed.items():
        grouped.setdefault(tuple(changes), []).append(name)
    for changes, names in grouped.items():
        shown = "; ".join(f"{key}: {_short(before)} -> {_short(after)}" for key, before, after in changes[:8])
        lines.append(f"  {', '.join(names)}: {shown}" + (f" (and {len(changes) - 8} more)" if len(changes) > 8 else ""))
    downstream = [name for name in stale if name not in changed]
    if downstream:
        lines.append(f"  {', '.join(downstream)}: trained after a changed stage")
    lines.append("Either write this run to a new directory (hydra.run.dir=<dir>, or paths.output_dir=<dir> when "
                 "calling train()), or retrain here with pipeline.restart_changed=true (deletes "
                 + ", ".join(f"{name}/" for name in stale) + " and trains those stages again).")
    return "\n".join(lines)


def stale_stages(cfg: DictConfig, output_dir: Path) -> list[str]:
    """Stages in ``output_dir`` trained with other weight-shaping settings, and every stage after them.

    Returns:
        their names (to retrain) when ``pipeline.restart_changed``; else none differ.

    Raises:
        SystemExit: a stage differs and ``pipeline.restart_changed`` is off; names the keys.
    """
    names, running = recipe_stages(cfg), set(cfg.pipeline.stages)
    changed: dict[str, list] = {}
    for name in names:
        stage_dir = output_dir / name
        if not has_state(stage_dir) or (name in running and not cfg.pipeline.resume):
            continue  # nothing here, or retrained from scratch anyway
        record = stage_dir / RECORD if (stage_dir / RECORD).is_file() else output_dir / RECORD
        stored = yaml.safe_load(record.read_text()) or {} if record.is_file() else {}
        if name not in (stored.get("stages") or {}):  # an older run's directory: its config may omit the stage
            log.warning("stage %s in %s has no settings record: reused unchecked", name, output_dir)
            continue
        changes = stage_changes(stored, resolved(cfg, name), name)
        if changes:
            changed[name] = changes
    if not changed:
        return []
    first = min(names.index(name) for name in changed)
    stale = [name for name in names[first:] if has_state(output_dir / name)]
    if not cfg.pipeline.restart_changed:
        raise SystemExit(_refusal(output_dir, changed, stale))
    return stale


def restart_and_record(cfg: DictConfig, output_dir: Path, stale: list[str], training: list[str]) -> None:
    """Delete the stale stages' directories, then record this run's settings in each stage it trains (rank 0)."""
    if rank_zero_only.rank != 0:
        return
    for name in stale:
        log.warning("pipeline.restart_changed: deleting %s (trained with other settings)", output_dir / name)
        shutil.rmtree(output_dir / name)
    text = run_config_yaml(cfg)
    for name in training:
        (output_dir / name).mkdir(parents=True, exist_ok=True)
        with atomic_path(output_dir / name / RECORD) as partial:
            partial.write_text(text)
