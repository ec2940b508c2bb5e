"""Config plumbing for training: compose-time schemas, target binding, one ``instantiate`` helper.

Schemas (dataclasses in Hydra's ConfigStore) cover the stable top-level nodes (``trainer``,
``stage``, ``data``, ``pipeline``, ``evaluation``): a typo or a wrong type fails when the config is composed.
Block keyword arguments are checked differently, by binding them to the builder's signature
(``check_targets``), so adding an argument to a block needs no schema edit.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict


@dataclass
class StageEvaluationSchema:
    """A stage's changes to the run's ``evaluation`` (None: the run's value), e.g. a larger ``per_task``
    where a proof needs one: ``stages.rl_hybrid.evaluation.per_task=256``."""

    modes: Optional[list[str]] = None
    per_task: Optional[int] = None
    batch_size: Optional[int] = None
    max_new_tokens: Optional[dict[str, int]] = None
    every_n_steps: Optional[int] = None
    during_per_task: Optional[int] = None


@dataclass
class StageSchema:
    """One training stage (``conf/stage/*.yaml``)."""

    name: str = "???"
    trainable: list[str] = field(default_factory=list)       # blocks: vpm | resampler | llm | contrastive
    lr: dict[str, float] = field(default_factory=dict)        # per block param group
    data: dict[str, Any] = field(default_factory=dict)        # mix: {corpus: weight}; RL: verifier: {corpus: kind}
    max_length: int = 2048
    max_steps: int = 1000
    batch_size: int = 8                                       # samples per batch (the cap with max_tokens)
    max_tokens: Optional[int] = None                          # padded-token budget per batch
    accumulate_grad_batches: int = 1
    schedule: Any = None                                      # partial (optimizer, total_steps) -> scheduler
    init_from: Any = "previous"                               # none | previous | path | {block: path}
    lora: Optional[dict[str, Any]] = None                     # {r, alpha, dropout, target_modules}
    grad_checkpointing: bool = False
    val_every: int = 0                                        # steps between held-out evals (0: end only)
    heldout: Optional[list[str]] = None                       # corpora evaluated (None: data.heldout)
    objective: Any = None                                     # partial (model, vocab_size) -> wrapper; RL settings; None: next token
    evaluation: StageEvaluationSchema = field(default_factory=StageEvaluationSchema)
    description: str = ""


@dataclass
class PipelineSchema:
    """Which stages run, in order, and run-level switches."""

    stages: Optional[list[str]] = None   # None: every stage the recipe defines, in its order
    resume: bool = True                  # reuse finished stages and last.ckpt found in the output dir
    stop_at_step: Optional[int] = None   # end the current stage early, as if killed (resume testing, time boxes)
    export: bool = True                  # official-format checkpoint after the last stage
    plots: bool = True
    restart_changed: bool = False        # retrain stages whose stored settings differ (and every later one)
    check_disk: bool = True              # refuse a run whose estimated checkpoints exceed the free space


@dataclass
class EvaluationSchema:
    """Generation-based held-out evaluation of the LLM stages (``assemblies.evaluation``)."""

    modes: list[str] = field(default_factory=lambda: ["short", "long"])
    per_task: int = 32                   # records per held-out task at the end of each stage
    batch_size: int = 48
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"short": 32, "long": 512})
    every_n_steps: int = 0               # also every K steps within a stage (0: at the end only)
    during_per_task: int = 8             # records per task for those in-stage evaluations


@dataclass
class DataSchema:
    """Corpora, processing and loading (``conf/data/*.yaml``)."""

    tokenizer: Any = "???"
    processor: Any = "???"
    corpora: dict[str, Any] = field(default_factory=dict)
    heldout: list[str] = field(default_factory=list)
    train_size: int = 100_000
    heldout_size: int = 64
    eval_batch_size: int = 16
    num_workers: int = 0
    train: Optional[str] = None          # a file in the official fine-tuning format (+experiment=finetune)
    validation: Optional[str] = None     # its held-out file; None: a held-out split of `train`


@dataclass
class TrainerSchema:
    """The ``lightning.pytorch.Trainer`` arguments the configs use (a typo fails at compose time)."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "auto"               # auto: bf16-mixed on GPU, 32-true on CPU
    gradient_clip_val: Optional[float] = 1.0
    log_every_n_steps: int = 1
    deterministic: bool = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    use_distributed_sampler: bool = False  # the mixture sampler is rank-aware itself
    limit_val_batches: Any = 1.0
    detect_anomaly: bool = False
    plugins: Any = None


# Schema name -> dataclass; the node it types is ``cfg.<name>``, except ``stage``: each ``cfg.stages.<name>``.
SCHEMAS = {"stage": StageSchema, "pipeline": PipelineSchema, "data": DataSchema, "trainer": TrainerSchema,
           "evaluation": EvaluationSchema}


def register_schemas() -> None:
    """Store the schemas as group ``schema`` so configs can list ``- optional /schema@_here_: stage``,
    and the ``official_dim`` resolver: ``${official_dim:<dir>,llm_hidden}`` is that size of the official-format
    checkpoint in ``<dir>`` (``+experiment=finetune`` builds the model of its ``checkpoint``).

    ``optional``: tools that compose these files without training (tasks/describe.py) need not register them.
    """
    OmegaConf.register_new_resolver("official_dim", _official_dim, replace=True, use_cache=True)
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)


def _official_dim(directory: str, name: str) -> Any:
    import json

    from assemblies.checkpoints.official import official_dims

    config = Path(directory) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: the checkpoint must be an official-format directory")
    return official_dims(json.loads(config.read_text()))[name]


def resolve_target(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_targets(node: Any, where: str = "") -> int:
    """Bind every ``_target_`` node's keys to its callable's signature, recursively; build nothing.

    Returns:
        number of targets checked.

    Raises:
        TypeError: naming the config path, when a node has an unknown or missing argument.
    """
    checked = 0
    if isinstance(node, (DictConfig, ListConfig)) and (node._is_none() or node._is_missing()
                                                        or node._is_interpolation()):
        return 0
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        for key in node:
            if not str(key).startswith("_"):
                checked += check_targets(node._get_node(key), f"{where}.{key}" if where else str(key))
        if target:
            fn = resolve_target(target)
            kwargs = {k: None for k in node if not str(k).startswith("_")}
            signature = inspect.signature(fn)
            try:
                if node.get("_partial_", False):
                    signature.bind_partial(**kwargs)
                else:
                    signature.bind(**kwargs)
            except TypeError as error:
                raise TypeError(f"config node {where or '<root>'} ({target}): {error}") from None
            checked += 1
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            checked += check_targets(node._get_node(i), f"{where}[{i}]")
    return checked


def recipe_stages(cfg: DictConfig) -> list[str]:
    """Names of the stages the recipe defines, in its order (a stage file names its stage)."""
    return [name for name, stage in cfg.stages.items() if stage.get("name")]


def pipeline_stages(cfg: DictConfig) -> list[DictConfig]:
    """The stage configs that ``cfg.pipeline.stages`` names, in order.

    ``pipeline.stages: null`` means every stage the recipe defines, in the recipe's order, and is
    replaced by that list in ``cfg``. A node that only adjusts a stage the recipe lacks
    (``+debug=fast``'s stage0 at full scale) defines none.

    Raises:
        ValueError: a name is not a stage defined in ``cfg.stages``.
    """
    defined = recipe_stages(cfg)
    if cfg.pipeline.stages is None:
        cfg.pipeline.stages = defined
    unknown = [name for name in cfg.pipeline.stages if name not in defined]
    if unknown:
        raise ValueError(f"pipeline.stages names unknown stages {unknown}; defined: {defined}")
    return [cfg.stages[name] for name in cfg.pipeline.stages]


# Inputs a recipe may need from the user, with what to set them to (conf/paths/default.yaml).
INPUTS = {
    "paths.siglip_dir": "a Hugging Face SigLIP / SigLIP2 vision directory (save_pretrained output, e.g. of "
                        "google/siglip2-so400m-patch14-384): the full recipe's stage1 starts its vision tower there",
    "paths.qwen3_dir": "a Hugging Face Qwen3 directory (e.g. of Qwen/Qwen3-8B): the full recipe's stage1 starts "
                       "its LLM there",
    "paths.tokenizer_dir": "a directory with MiniCPM-V 4.5's tokenizer files (vocab.json, merges.txt, "
                           "tokenizer_config.json, e.g. of openbmb/MiniCPM-V-4_5)",
    "checkpoint": "an official-format MiniCPM-V directory (config.json, safetensors, tokenizer, "
                  "preprocessor_config.json), e.g. openbmb/MiniCPM-V-4_5 or a toolkit export",
    "data.train": "a training file in the official fine-tuning format (JSON list or JSONL)",
}


def missing_inputs(cfg: DictConfig, stages: list[DictConfig]) -> list[str]:
    """One line per ``INPUTS`` entry that the stages or the data refer to but that is unset or not on disk."""
    used = "\n".join(OmegaConf.to_yaml(node) for node in (*stages, cfg.data))
    problems = []
    for key, meaning in INPUTS.items():
        if "${" + key + "}" not in used:
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if value is None or OmegaConf.is_missing(cfg, key):
            problems.append(f"set {key}=<dir>: {meaning}")
        elif not Path(str(value)).exists():
            problems.append(f"{key}={value} does not exist; it should be {meaning}")
    return problems


def run_config_yaml(cfg: DictConfig) -> str:
    """The resolved config of this run, with the stages it runs only (a recipe stage it skips may name an
    input left unset, e.g. the full recipe's stage1 when fine-tuning). The kept stages are resolved in the
    whole config first: they may refer to a skipped one (``+experiment=rl_control`` copies rl_hybrid's settings)."""
    run = cfg.copy()
    with open_dict(run):
        run.stages = {name: OmegaConf.to_container(cfg.stages[name], resolve=True) for name in cfg.pipeline.stages}
    return OmegaConf.to_yaml(run, resolve=True)


def instantiate(node: Any, **kwargs) -> Any:
    """The project's one route to ``hydra.utils.instantiate`` (where a Hydra 1.4 target whitelist goes)."""
    return hydra_instantiate(node, **kwargs)


def resolve_precision(precision: Any) -> Any:
    """``auto``: bf16-mixed with CUDA, fp32 on CPU (bf16 matmuls are ~300x slower on CPU)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def to_plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
