"""``train(cfg)``: run the configured stages in order, passing the weights along.

Per stage: say what it trains on, initialise (``init_from``), optionally add LoRA or wrap the
assembly in the stage's ``objective`` (contrastive pre-training), freeze, build data and Lightning
objects, fit (resuming from ``last.ckpt`` when the run directory has one), evaluate the held-out
tasks (teacher-forced, and by generating answers in both modes: ``generation_eval``), save the
stage's weights as safetensors. After the last stage: export, metrics JSON, plots.
Everything a stage writes lives in ``<output_dir>/<stage name>/``, so rerunning the same command in
the same directory continues where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
import torch
from omegaconf import DictConfig
from torch import nn

from assemblies.checkpoints.files import checkpoint_files
from assemblies.checkpoints.model_dir import tokenizer_digest
from assemblies.checkpoints.official import load_tensors_into, parameters_on_meta
from assemblies.contrastive import ContrastivePretrainer
from assemblies.training import report
from assemblies.training.callbacks import Throughput, quiet_lightning
from assemblies.training.checkpointing import AtomicCheckpointIO, atomic_path, resume_checkpoint
from assemblies.training.config import (check_targets, instantiate, pipeline_stages, recipe_stages,
                                        resolve_precision, run_config_yaml, to_plain)
from assemblies.training.contrastive_module import ContrastiveModule
from assemblies.training.curves import plot_curves
from assemblies.training.datamodule import MultimodalDataModule
from assemblies.training.dpo import DpoModule, DpoObjective, PreferenceDataModule, PreferenceSource
from assemblies.training.generation_eval import stage_evaluation
from assemblies.training.grpo import GrpoModule, GrpoObjective
from assemblies.training.module import MLLMModule
from assemblies.training.preflight import check_settings, preflight
from assemblies.training.rl_data import PromptDataModule
from assemblies.training.run_tokenizer import TOKENIZER_DIR, pin_tokenizer
from assemblies.training.sharding import UnitMaterializer, full_state_dict
from assemblies.training.stages import add_lora, freeze, merge_lora
from assemblies.training.weights import WEIGHTS_FILE, hf_model_type, load_weights, save_weights, tensor_index
from blocks.answers import MODES
from blocks.generation.tokens import generation_token_ids

log = logging.getLogger(__name__)


def check_capacity(model_cfg: DictConfig, trainer_cfg: DictConfig, stages: list[DictConfig]) -> None:
    """Stop before building anything when the machine cannot hold the model and its optimizer state.

    Uses the assembly's estimate (``assemblies.memory.stage_memory``: weights, gradients, AdamW state;
    activations excluded) for the largest stage, against the RAM (CPU) or the memory of one GPU
    (divided over the GPUs when the strategy shards, i.e. FSDP/DeepSpeed).

    Raises:
        SystemExit: with what the run would need.
    """
    from assemblies.memory import WEIGHT_BYTES, Stage, stage_memory

    with torch.device("meta"):
        model = instantiate(model_cfg)
    precision = resolve_precision(trainer_cfg.precision)
    precision = precision if precision in WEIGHT_BYTES else "32-true"  # unmodelled: assume the largest
    use_gpu = torch.cuda.is_available() and trainer_cfg.accelerator in ("auto", "gpu", "cuda")
    devices = int(trainer_cfg.devices) if use_gpu and str(trainer_cfg.devices).isdigit() else 1
    shards = devices * int(trainer_cfg.num_nodes) if uses_fsdp(trainer_cfg) or \
        "deepspeed" in str(trainer_cfg.strategy).lower() else 1
    need = max(stage_memory(model, Stage(str(s.name), list(s.trainable), to_plain(s.lora) or {}), precision,
                            [shards])["per_gpu"][shards] for s in stages)
    if use_gpu:
        have = min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
        where = "one GPU"
    else:
        import os
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        where = "CPU RAM"
    if need > have:
        total = sum(p.numel() for p in model.parameters())
        raise SystemExit(
            f"this model has {total:,} parameters; its largest stage needs about {need / 2**30:.0f} GiB per device "
            f"for weights, gradients and AdamW state ({precision}, before activations) but {where} offers "
            f"{have / 2**30:.0f} GiB. Use GPUs with FSDP (trainer=fsdp, e.g. 8 x 80 GB) or the tiny scale: scale=tiny")


def uses_fsdp(trainer_cfg: DictConfig) -> bool:
    """The trainer shards parameters with FSDP: the model is then built on meta and materialised per unit."""
    return "fsdp" in str(trainer_cfg.strategy).lower()


def _init_source(stage: DictConfig, previous_dir: Path | None):
    """What ``init_from`` loads: None (keep the model's weights), a weights file, a directory or {block: dir}."""
    source = stage.init_from
    if source in (None, "none"):
        return None
    if source == "previous":
        if previous_dir is None:
            return None  # first stage of the run: nothing before it
        weights = previous_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"stage {stage.name}: init_from=previous but {weights} does not exist; run the "
                                    f"previous stage in this output dir first or set stages.{stage.name}.init_from=<dir>")
        return weights
    return to_plain(source) if isinstance(source, DictConfig) else source


def _meta_stage_model(cfg: DictConfig, stage: DictConfig, carried: Path | None,
                      previous_dir: Path | None) -> tuple[nn.Module, UnitMaterializer]:
    """A fresh assembly on meta and what materialises it per FSDP unit: the weights the run carries so far
    (the last finished stage's file), overlaid by the stage's ``init_from``; random init where neither reaches."""
    if stage.lora or stage.objective is not None:
        raise SystemExit(f"stage {stage.name}: LoRA and objective stages are not built on meta for FSDP yet; "
                         "train them with trainer=ddp, deepspeed or one device")
    source = _init_source(stage, previous_dir)
    blocks = source.items() if isinstance(source, dict) else []
    converted = [f"{block}: {location}" for block, location in blocks if hf_model_type(location)]
    if converted:
        raise SystemExit(f"stage {stage.name}: init_from names Hugging Face directories ({', '.join(converted)}), "
                         "which are converted on load and cannot be read per FSDP unit; run this stage without "
                         "FSDP (it trains the resampler only in the full recipe) or init from its weights file")
    with parameters_on_meta():
        model = instantiate(cfg.model)
    index = {}
    for weights in (carried, source):
        if weights is not None:
            index.update(tensor_index(weights))
    return model, UnitMaterializer(model, int(cfg.seed), weights=index)


def _callbacks(cfg: DictConfig, stage_dir: Path) -> list[pl.Callback]:
    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        if node is None or "_target_" not in node:
            continue
        if node._target_.endswith("ProgressBar") and not cfg.trainer.enable_progress_bar:
            continue  # Lightning refuses a progress-bar callback when the bar is switched off
        extra = {"dirpath": str(stage_dir / "checkpoints")} if node._target_.endswith("ModelCheckpoint") else {}
        callbacks.append(instantiate(node, **extra))
    return callbacks


def _loggers(cfg: DictConfig, stage_dir: Path) -> list:
    # Each attempt at a stage (first run, each resume) logs into its own version folder, so a resume
    # never overwrites the curves of the steps before it.
    attempt = f"attempt{len(list(stage_dir.glob('csv/attempt*')))}"
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        loggers.append(instantiate(node, save_dir=str(stage_dir), **({"version": attempt} if "version" in node else {})))
    return loggers


def _strategy(trainer_cfg: DictConfig, model: nn.Module):
    strategy = trainer_cfg.strategy
    if not isinstance(strategy, DictConfig):
        return strategy  # a Lightning name: "auto", "ddp", "deepspeed_stage_2", ...
    if strategy.get("_partial_", False):  # a factory that needs the blocks' layer classes
        # The repeated layers plus the resampler (one 88M-parameter unit at full size).
        return instantiate(strategy)(layer_classes=tuple(dict.fromkeys((*model.layer_classes, type(model.resampler)))))
    return instantiate(strategy)


def _data_options(cfg: DictConfig, stage: DictConfig, tokenizer, process_factory) -> dict:
    """Keyword arguments of ``MultimodalDataModule`` for ``stage`` (the RL data modules take them too)."""
    accumulate = int(stage.accumulate_grad_batches)
    heldout_corpora = cfg.data.heldout if stage.heldout is None else stage.heldout
    processor = process_factory(max_length=int(stage.max_length))
    return dict(corpora={name: instantiate(node) for name, node in cfg.data.corpora.items()},
                process=functools.partial(processor, mode="train"), pad_id=tokenizer.pad_token_id,
                mix=to_plain(stage.data.mix), heldout=list(heldout_corpora),
                num_batches=int(stage.max_steps) * accumulate, batch_size=int(stage.batch_size),
                train_size=cfg.data.train_size, heldout_size=cfg.data.heldout_size,
                eval_batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.num_workers, seed=int(cfg.seed),
                max_tokens=stage.max_tokens, count_tokens=functools.partial(processor.count_tokens, mode="train"))


def build_stage(cfg: DictConfig, model: nn.Module, stage: DictConfig, stage_dir: Path, tokenizer,
                process_factory, materializer: UnitMaterializer | None = None
                ) -> tuple[nn.Module, MultimodalDataModule, MLLMModule, int]:
    """What trains in ``stage``: (the module trained: the assembly or its objective's wrapper, the data
    module, the Lightning module, optimizer steps per data batch).

    The objective decides: none -> next-token loss (``MLLMModule``); a partial wrapper such as
    stage0's ``ContrastivePretrainer`` -> ``ContrastiveModule``; ``GrpoObjective`` / ``DpoObjective``
    -> the RL modules, whose batches are generation prompts (``assemblies.training.rl_data``).
    """
    objective = instantiate(stage.objective, _convert_="all") if stage.objective is not None else None
    rl = isinstance(objective, (GrpoObjective, DpoObjective))
    trained = model if objective is None or rl else objective(model=model, vocab_size=len(tokenizer))
    options = _data_options(cfg, stage, tokenizer, process_factory)
    updates = objective.updates_per_batch if isinstance(objective, GrpoObjective) else 1
    module_options = dict(optimizer=to_plain(cfg.optimizer), scheduler=to_plain(stage.schedule),
                          lr=to_plain(stage.lr), total_steps=int(stage.max_steps) * updates,
                          decode=functools.partial(tokenizer.decode, skip_special_tokens=True),
                          weight_decay=float(cfg.get("weight_decay", 0.0)),
                          model_config={"model": to_plain(cfg.model), "lora": to_plain(stage.lora),
                                        "objective": None if rl else to_plain(stage.objective),
                                        "vocab_size": len(tokenizer)},
                          materializer=materializer)
    if not rl:
        data = MultimodalDataModule(**options)
        data.setup("fit")
        module_class = ContrastiveModule if isinstance(trained, ContrastivePretrainer) else MLLMModule
        return trained, data, module_class(trained, heldout_tasks=data.heldout_tasks, **module_options), 1
    prompt_processors = {mode: functools.partial(process_factory(max_length=int(stage.max_length),
                                                                 enable_thinking=mode == "long"), mode="inference")
                         for mode in MODES}
    ids = generation_token_ids(tokenizer)
    if isinstance(objective, GrpoObjective):
        data = PromptDataModule(**options, prompt_processors=prompt_processors,
                                scheduler=objective.scheduler(int(cfg.seed)),
                                verifiers=to_plain(stage.data.get("verifier")), steps_per_batch=updates)
        data.setup("fit")
        module = GrpoModule(model, heldout_tasks=data.heldout_tasks, objective=objective, tokenizer=tokenizer,
                            generation_ids=ids, seed=int(cfg.seed), gradient_clip=cfg.trainer.gradient_clip_val,
                            **module_options)
        return model, data, module, updates
    source = PreferenceSource(objective, options["corpora"], options["mix"], prompt_processors[objective.mode],
                              tokenizer, ids, stage_dir, int(cfg.seed))
    data = PreferenceDataModule(**options, source=source)
    data.setup("fit")
    module = DpoModule(model, heldout_tasks=data.heldout_tasks, objective=objective, pad_id=tokenizer.pad_token_id,
                       source=source, **module_options)
    return model, data, module, 1


def run_stage(cfg: DictConfig, model: nn.Module, stage: DictConfig, stage_dir: Path, tokenizer,
              process_factory, intro: dict | None = None, materializer: UnitMaterializer | None = None) -> dict:
    """Fit one stage; returns its report (losses, held-out metrics, throughput; ``intro``: what it trains on).
    With ``materializer``, ``model`` is on meta and FSDP materialises it per unit (``assemblies.training.sharding``)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    if stage.lora:
        add_lora(model, **to_plain(stage.lora))
    trained, data, module, steps_per_batch = build_stage(cfg, model, stage, stage_dir, tokenizer, process_factory,
                                                         materializer)
    frozen = freeze(trained, list(stage.trainable), lora_targets_llm=bool(stage.lora))
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(bool(stage.grad_checkpointing))
    accumulate = int(stage.accumulate_grad_batches)
    throughput = Throughput()
    # Generation reads the blocks outside FSDP's forward, which under sharding hold only this rank's shard.
    generation = None if materializer else stage_evaluation(cfg, model, stage, stage_dir, tokenizer,
                                                            list(data.heldout_names), steps_per_batch)
    if materializer and cfg.get("evaluation") and cfg.evaluation.modes:
        log.info("stage %s: generation-based evaluation is off under FSDP (teacher-forced held-out metrics stay); "
                 "run tasks/evaluate.py on the stage's weights", stage.name)
    stop = cfg.pipeline.stop_at_step
    trainer = instantiate(cfg.trainer, _convert_="all", precision=resolve_precision(cfg.trainer.precision),
                          strategy=_strategy(cfg.trainer, model),
                          plugins=[*(instantiate(cfg.trainer.plugins) or []), AtomicCheckpointIO()],
                          max_steps=(int(stop) if stop else int(stage.max_steps)) * steps_per_batch,
                          accumulate_grad_batches=accumulate,
                          # manual optimisation (RL) clips in the module: Lightning refuses gradient_clip_val there
                          **({"gradient_clip_val": None} if not module.automatic_optimization else {}),
                          val_check_interval=int(stage.val_every) * accumulate if stage.val_every else None,
                          check_val_every_n_epoch=None if stage.val_every else 1,
                          callbacks=[throughput, *([generation] if generation else []), *_callbacks(cfg, stage_dir)],
                          logger=_loggers(cfg, stage_dir),
                          default_root_dir=str(stage_dir))
    resume = resume_checkpoint(stage_dir / "checkpoints") if cfg.pipeline.resume else None
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
    seconds = time.perf_counter() - started
    empty = getattr(data, "empty", False)  # a DPO stage whose samples gave no pair: the weights pass through
    if empty:
        log.warning("stage %s had nothing to train on; its weights are the previous stage's", stage.name)
    steps = trainer.global_step // steps_per_batch
    finished = steps >= int(stage.max_steps) or empty
    if generation and finished and not empty and generation.final is None:
        generation.on_train_end(trainer, module)  # fit restored its last step (killed while evaluating): no hook ran
    heldout = trainer.validate(module, datamodule=data, verbose=False)[0] if finished or not stop else {}
    if stage.lora:
        merge_lora(model)
    state = full_state_dict(module.model) if finished and materializer else model  # gathering is a collective
    if finished and trainer.is_global_zero:
        save_weights(state, stage_dir / WEIGHTS_FILE)
    result = report.stage_result(stage.name, stage_dir, heldout, module.chance(data), throughput.summary(), seconds,
                                 trainable=frozen.trainable, steps=steps, finished=finished,
                                 generation=generation.final if generation else None,
                                 eval_seconds=generation.seconds if generation else 0.0, intro=intro)
    result.update(getattr(module, "stage_metrics", {}))  # e.g. the DPO stage's held-out contradictions
    if trainer.is_global_zero:
        with atomic_path(stage_dir / "result.json") as partial:  # a rerun trusts it: never half-written
            partial.write_text(json.dumps(result, indent=2))
    trainer.strategy.barrier()  # other ranks wait until the stage's files exist
    return result


@contextlib.contextmanager
def compute_threads(requested: int | None, data_workers: int) -> Iterator[int]:
    """Torch intra-op threads inside the block, restored after it: ``requested``, else the current
    count minus one per data worker (at least 1), so the workers that prepare batches do not compete
    with the compute threads (docs/tiny_recipe.md, "Threads")."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(requested) if requested else max(1, previous - data_workers))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def train(cfg: DictConfig) -> float:
    """Run ``cfg.pipeline.stages`` in order; returns ``cfg.optimized_metric`` of the last stage (for sweepers)."""
    if "model" not in cfg or "_target_" not in cfg.model:
        raise SystemExit("no model in the config: train with an assembly, e.g. `python tasks/train.py +assembly=mcpv45`")
    check_settings(cfg)
    check_targets(cfg)
    try:
        stages = pipeline_stages(cfg)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    start = preflight(cfg, stages)  # first: the model's sizes may come from an input (+experiment=finetune)
    check_capacity(cfg.model, cfg.trainer, stages)
    quiet_lightning()
    start()
    with compute_threads(cfg.get("threads"), int(cfg.data.get("num_workers", 0))):
        return _run_pipeline(cfg, stages)


def _run_pipeline(cfg: DictConfig, stages: list[DictConfig]) -> float:
    pl.seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    main_process = rank_zero_only.rank == 0  # data-parallel ranks run this function too; one writes files
    if main_process:
        (output_dir / "config.yaml").write_text(run_config_yaml(cfg))

    tokenizer = pin_tokenizer(instantiate(cfg.data.tokenizer), output_dir / TOKENIZER_DIR, write=main_process)
    sharded = uses_fsdp(cfg.trainer)
    with parameters_on_meta() if sharded else contextlib.nullcontext():
        model = instantiate(cfg.model)
    vocab = model.llm.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise SystemExit(f"the tokenizer has {len(tokenizer)} tokens but the LLM embeds only {vocab}")
    tokens_per_group = model.resampler.tokens_per_group

    def process_factory(max_length: int, enable_thinking: bool = False):
        return instantiate(cfg.data.processor)(tokenizer=tokenizer, tokens_per_group=tokens_per_group,
                                               max_length=max_length, enable_thinking=enable_thinking)

    results, previous_dir, seen = [], None, set()
    carried = None  # the weights a sharded run has reached (the last finished stage's file)
    all_names = recipe_stages(cfg)  # a stage's "previous" is the one before it in the recipe
    for stage in stages:
        stage_dir = output_dir / stage.name
        index = all_names.index(stage.name)
        if previous_dir is None and index > 0 and stage.init_from == "previous":
            previous_dir = output_dir / all_names[index - 1]
        if cfg.pipeline.resume and (stage_dir / "result.json").is_file() and (stage_dir / WEIGHTS_FILE).is_file():
            log.info("stage %s already finished in %s: loading its weights", stage.name, stage_dir)
            if sharded:
                carried = stage_dir / WEIGHTS_FILE
            else:
                load_weights(model, stage_dir / WEIGHTS_FILE)
            results.append(json.loads((stage_dir / "result.json").read_text()))
        else:
            intro = report.stage_intro(stage, cfg.data.corpora, seen)
            if main_process:
                report.announce(report.intro_text(stage.name, intro))
            if sharded:
                model, materializer = _meta_stage_model(cfg, stage, carried, previous_dir)
                results.append(run_stage(cfg, model, stage, stage_dir, tokenizer, process_factory, intro, materializer))
                carried = stage_dir / WEIGHTS_FILE
            else:
                source = _init_source(stage, previous_dir)
                if source is not None:
                    load_weights(model, source, tokenizer=tokenizer)
                results.append(run_stage(cfg, model, stage, stage_dir, tokenizer, process_factory, intro))
            if not results[-1]["finished"]:
                log.info("stopped stage %s at step %d (pipeline.stop_at_step)", stage.name, results[-1]["steps"])
                break
        previous_dir = stage_dir
        seen.update(stage.data.mix)
        if main_process:
            report.announce(report.stage_table(results[-1], results[-2] if len(results) > 1 else None))

    summary = report.run_summary(results, cfg)
    if not main_process:
        return float(summary.get(cfg.optimized_metric) or float("nan"))
    pinned = output_dir / TOKENIZER_DIR
    summary["tokenizer"] = {"dir": str(pinned), "sha256": tokenizer_digest(pinned)}
    if cfg.pipeline.export and results and results[-1]["finished"]:
        if sharded:  # rank 0 alone assembles the whole model, from the last stage's file
            with parameters_on_meta():
                model = instantiate(cfg.model)
            load_tensors_into(model, checkpoint_files(carried), str(carried), dtype=None)
        processor = instantiate(cfg.data.processor)(tokenizer=tokenizer, tokens_per_group=tokens_per_group)
        # The released checkpoints are bf16; a model trained in fp32 (CPU) is exported as it is, bit for bit.
        fp32 = str(resolve_precision(cfg.trainer.precision)).startswith("32")
        exported = report.export(model, output_dir / "export", tokenizer, processor.config,
                                 torch.float32 if fp32 else torch.bfloat16)
        summary["export_dir"] = str(exported) if exported else None
    if cfg.pipeline.plots:
        summary["plots"] = [str(p) for p in plot_curves([output_dir / r["stage"] for r in results], output_dir)]
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(f"run directory: {output_dir}\n  stage checkpoints and logs: <stage>/, metrics: metrics.json, "
          f"curves: {', '.join(Path(p).name for p in summary.get('plots', [])) or 'off'}, "
          f"official-format export: {summary.get('export_dir') or 'none'}", flush=True)
    metric = summary.get(cfg.optimized_metric)
    return float(metric) if metric is not None else float("nan")
