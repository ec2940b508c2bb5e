"""Evaluate a checkpoint by generating: ``python tasks/evaluate.py checkpoint=<dir> [data=<file.jsonl>]``.

Writes ``predictions.jsonl`` (one row per sample and mode, appended batch by batch), ``scores.json``
and ``scores.md`` (accuracy ± standard error, chance, generated tokens, truncation and format-failure
rates, seconds per sample, per task x mode) into ``output_dir`` and prints the table. ``resume=true``
continues an interrupted run; ``score_only=<predictions.jsonl>`` rescores a file without a model.
A thin Hydra entry point over ``assemblies.evaluation``; see conf/evaluate.yaml and docs/inference.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from assemblies.chat_terminal import load_chat
from assemblies.evaluation import HeldoutSet, ReferenceFile, evaluate, format_table, score_file
from assemblies.evaluation.scoring import write_scores

log = logging.getLogger("evaluate")


def records(cfg: DictConfig):
    """The built-in held-out tasks, or the reference file ``cfg.eval_data``."""
    if cfg.eval_data != "builtin":
        return ReferenceFile(cfg.eval_data)
    documents = {"layout": OmegaConf.to_container(cfg.page_layout), "corruption": OmegaConf.to_container(cfg.corruption)}
    return HeldoutSet(list(cfg.corpora), per_task=int(cfg.per_task), seed=int(cfg.seed),
                      options={"documents": documents})


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    output = Path(HydraConfig.get().runtime.output_dir)
    if cfg.score_only:
        rows, scores = score_file(cfg.score_only)
        about = {"score_only": str(cfg.score_only)}
    else:
        chat = load_chat(cfg.checkpoint, cfg.tokenizer, OmegaConf.to_container(cfg.processor),
                         OmegaConf.to_container(cfg.stop_tokens) if cfg.stop_tokens else None, cfg.dtype)
        generation = {k: v for k, v in OmegaConf.to_container(cfg.generation).items() if v is not None}
        result = evaluate(chat, records(cfg), modes=list(cfg.modes), batch_size=int(cfg.batch_size),
                          max_new_tokens=OmegaConf.to_container(cfg.max_new_tokens), thinking_budget=cfg.thinking_budget,
                          generation=generation, predictions=output / "predictions.jsonl", resume=bool(cfg.resume))
        rows, scores = result.rows, result.scores
        about = {"checkpoint": str(cfg.checkpoint), "data": str(cfg.eval_data), "generation": generation,
                 "max_new_tokens": OmegaConf.to_container(cfg.max_new_tokens), "skipped": dict(result.skipped),
                 "generated": result.generated, "seconds": round(result.seconds, 1)}
    write_scores(scores, output, about)
    log.info("%d predictions scored\n%s", len(rows), format_table(scores))
    print(f"scores: {output / 'scores.json'}, predictions: {cfg.score_only or output / 'predictions.jsonl'}", flush=True)


def rename_data_argument(argv: list[str]) -> list[str]:
    """``data=<x>`` -> ``eval_data=<x>``: Hydra reads ``data=`` as choosing an option of the training
    config group ``conf/data`` (and fails), so the value lives under another key."""
    return [f"eval_data={arg[len('data='):]}" if arg.startswith("data=") else arg for arg in argv]


if __name__ == "__main__":
    sys.argv = rename_data_argument(sys.argv)
    main()
