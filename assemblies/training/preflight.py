"""Checks made before the first training step, so that a run fails in seconds instead of after a stage.

``check_settings(cfg)``, first: every key of a schema-typed node (``stages.*``, ``pipeline``,
``data``, ``trainer``, ``evaluation``) is a field of its schema. Hydra refuses ``stages.stage3.max_step=5``
at compose time but adds ``+stages.stage3.max_step=5``, which nothing would read.

``preflight(cfg, stages)``, once the stages are known: the output directory can be written; the
stages it already holds were trained with these settings (``rerun``); the run's inputs are set
(``config.missing_inputs``) and every stage that will train finds its data files and its ``init_from``
weights (one message for all); the disk holds what the run writes. Each refusal is a ``SystemExit``
naming the settings, files or numbers, not a traceback. ``RunDirCheck`` is the Hydra callback that
checks the run directory before Hydra writes its own files there.
"""

from __future__ import annotations

import difflib
import inspect
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from assemblies.training.config import (INPUTS, SCHEMAS, instantiate, missing_inputs, recipe_stages, resolve_precision,
                                        resolve_target, to_plain)
from assemblies.training.rerun import finished, restart_and_record, stale_stages
from assemblies.training.weights import WEIGHTS_FILE, weights_files

GIB, MIB = 1024 ** 3, 1024 ** 2
EXPORT_BYTES = 2  # the official-format export is bf16
# Keys inside schema fields typed as open dicts that the pipeline reads: any other is a typo.
NESTED = {"stage": {"data": ["mix", "verifier"]}}  # verifier: the RL stages (corpus -> answer verifier)


def unknown_keys(cfg: DictConfig) -> list[str]:
    """One line per key of a schema-typed node that its schema lacks, with the closest field if any."""
    problems = []
    for name, schema in SCHEMAS.items():
        nodes = {f"stages.{key}": node for key, node in (cfg.get("stages") or {}).items()} if name == "stage" \
            else {name: cfg.get(name)}
        known = [field.name for field in fields(schema)]
        for where, node in nodes.items():
            problems += _unknown(node, where, known)
            for field_name, inner in NESTED.get(name, {}).items():
                problems += _unknown(node.get(field_name) if isinstance(node, DictConfig) else None,
                                     f"{where}.{field_name}", inner)
    return problems


def _unknown(node: object, where: str, known: list[str]) -> list[str]:
    problems = []
    for key in node.keys() if isinstance(node, DictConfig) else []:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            problems.append(f"{where}.{key}: " + (f"did you mean {where}.{close[0]}?" if close
                                                  else f"{where} has {', '.join(known)}"))
    return problems


def check_settings(cfg: DictConfig) -> None:
    """Raises SystemExit: ``cfg`` has keys no schema defines (see the module docstring)."""
    problems = unknown_keys(cfg)
    if problems:
        raise SystemExit("unknown settings (`+` adds a key, but stage, pipeline, data, trainer and evaluation configs "
                         "take only the fields of their schemas in assemblies/training/config.py):\n  "
                         + "\n  ".join(problems))


def check_writable(directory: Path, setting: str) -> None:
    """Create ``directory`` and a file in it, or stop naming the setting that chose it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as error:
        raise SystemExit(f"cannot write to the output directory {directory} ({setting}): {error.strerror or error} "
                         f"({error.filename}). Choose a directory you can write: hydra.run.dir=<dir> on the "
                         f"command line (paths.output_dir follows it)") from None


class RunDirCheck(Callback):
    """Hydra callback: an unwritable run or sweep directory stops the run before Hydra logs into it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def _path_arguments(target: str) -> list[str]:
    """The parameters of a corpus factory annotated as file-system paths (``os.PathLike``)."""
    return [name for name, parameter in inspect.signature(resolve_target(target)).parameters.items()
            if "PathLike" in str(parameter.annotation)]


def _is_input(raw: object) -> bool:
    """An unresolved value set from an ``INPUTS`` entry, which ``missing_inputs`` checks and names."""
    return any(raw == "${" + key + "}" for key in INPUTS)


def missing_data(cfg: DictConfig, training: list[DictConfig]) -> list[str]:
    """Corpora the training stages name but ``data.corpora`` lacks, and their path arguments not on disk
    (except those set from an ``INPUTS`` entry: ``missing_inputs`` names that setting)."""
    problems: dict[str, list[str]] = {}  # problem -> the stages it stops
    for stage in training:
        heldout = cfg.data.heldout if stage.heldout is None else stage.heldout
        for name in dict.fromkeys([*stage.data.mix, *heldout]):
            node = cfg.data.corpora.get(name)
            if node is None:
                problems.setdefault(f"corpus {name!r} is not in data.corpora ({', '.join(cfg.data.corpora)})",
                                    []).append(stage.name)
                continue
            raw = OmegaConf.to_container(node, resolve=False)
            for argument in _path_arguments(node._target_) if "_target_" in node else []:
                if _is_input(raw.get(argument)):
                    continue
                value = node.get(argument)
                if value is not None and not Path(str(value)).exists():
                    problems.setdefault(f"data.corpora.{name}.{argument}: {value} does not exist",
                                        []).append(stage.name)
    return [f"{problem} (stage {', '.join(names)})" for problem, names in problems.items()]


def init_problems(cfg: DictConfig, stages: list[DictConfig], training: list[DictConfig], output_dir: Path,
                  stale: list[str]) -> list[str]:
    """What each training stage's ``init_from`` would fail on when the stage starts."""
    problems, names = [], recipe_stages(cfg)
    for stage in training:
        source = stage.init_from
        if source in (None, "none"):
            continue
        if source == "previous":
            index = names.index(stage.name)
            previous = names[index - 1] if index else None
            # Only the run's first stage starts from a stage of an earlier run (later ones: the stage before them).
            if stage.name == stages[0].name and previous and (previous in stale or not finished(output_dir / previous)):
                problems.append(f"stage {stage.name}: init_from=previous but {output_dir / previous / WEIGHTS_FILE} "
                                f"will not exist; run {previous} first (pipeline.stages=[{previous},{stage.name},...])"
                                f" or set stages.{stage.name}.init_from=<dir>")
            continue
        raw = OmegaConf.to_container(stage, resolve=False)["init_from"]
        for block, value in raw.items() if isinstance(raw, dict) else [(None, raw)]:
            if _is_input(value):
                continue
            location = source[block] if block else source
            try:
                weights_files(location)
            except (OSError, ValueError) as error:
                problems.append(f"stage {stage.name}: init_from: {error}")
    return problems


def free_bytes(directory: Path) -> int:
    """Free space on the file system that holds ``directory`` (the probe tests replace)."""
    return shutil.disk_usage(directory).free


def _checkpoint_files(node: DictConfig | None, max_steps: int) -> int:
    """Checkpoint files a stage keeps at its peak: ``last``, the top-k, and the one being written."""
    if node is None or "_target_" not in node:
        return 0
    top_k = int(node.get("save_top_k", 1))
    saves = -(-max_steps // int(node.get("every_n_train_steps") or max_steps))
    kept = (saves if top_k < 0 else top_k) + (1 if node.get("save_last") else 0)
    return kept + 1 if kept else 0


def _size(count: float) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.1f} MiB"


def disk_need(cfg: DictConfig, training: list[DictConfig]) -> tuple[int, list[str]]:
    """Bytes the training stages and the export write (an estimate), and one line per item.

    A Lightning checkpoint holds every weight and AdamW's two moments of the trainable ones, in the
    weights' dtype (fp32 unless ``bf16-true``); each stage also saves its weights once.
    """
    from assemblies.memory import Stage, stage_memory

    with torch.device("meta"):
        model = instantiate(cfg.model)
    width = 2 if resolve_precision(cfg.trainer.precision) in ("bf16-true", "16-true") else 4
    total = sum(parameter.numel() for parameter in model.parameters())
    need, lines = 0, []
    for stage in training:
        trainable = stage_memory(model, Stage(str(stage.name), list(stage.trainable), to_plain(stage.lora) or {}),
                                 "32-true", [1])["trainable_params"]
        checkpoint = (total + 2 * trainable) * width
        files = _checkpoint_files((cfg.get("callbacks") or {}).get("model_checkpoint"), int(stage.max_steps))
        need += files * checkpoint + total * width
        lines.append(f"{stage.name}: {files} checkpoints x {_size(checkpoint)} (weights + AdamW state of "
                     f"{trainable:,} trainable parameters) + {_size(total * width)} of weights")
    if cfg.pipeline.export:
        need += total * EXPORT_BYTES
        lines.append(f"export: {_size(total * EXPORT_BYTES)}")
    return need, lines


def check_disk(cfg: DictConfig, training: list[DictConfig], output_dir: Path) -> None:
    need, lines = disk_need(cfg, training)
    free = free_bytes(output_dir)
    if need > free:
        raise SystemExit(
            f"not enough disk space in {output_dir}: this run writes about {_size(need)} and {_size(free)} are free\n  "
            + "\n  ".join(lines) + "\nFree space, write elsewhere (hydra.run.dir=<dir>), keep fewer checkpoints "
            "(callbacks.model_checkpoint.save_top_k=0), or skip this estimate with pipeline.check_disk=false")


def preflight(cfg: DictConfig, stages: list[DictConfig]) -> Callable[[], None]:
    """Run the checks of the module docstring in order.

    Returns:
        what starts the run once the caller's own checks pass (the model fits): check the disk space
        (``pipeline.check_disk``), then (rank 0) delete the stale stages (``pipeline.restart_changed``)
        and record this run's settings in each stage it trains.

    Raises:
        SystemExit: the first check that fails (inputs, data and ``init_from`` problems all at once).
    """
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir, "paths.output_dir")
    inputs = missing_inputs(cfg, stages)
    stale = [] if inputs else stale_stages(cfg, output_dir)  # the comparison resolves the settings: inputs first
    training = [stage for stage in stages if stage.name in stale
                or not (cfg.pipeline.resume and finished(output_dir / stage.name))]
    problems = inputs + missing_data(cfg, training) + init_problems(cfg, stages, training, output_dir, stale)
    if problems:
        raise SystemExit("this run needs (checked before any stage trains):\n  " + "\n  ".join(problems))

    def start() -> None:
        if cfg.pipeline.check_disk:
            check_disk(cfg, training, output_dir)
        restart_and_record(cfg, output_dir, stale, [stage.name for stage in training])

    return start
