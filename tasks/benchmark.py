"""Run the project's benchmarks; each prints a table, and the figures are written as JSON.

    python tasks/benchmark.py
    python tasks/benchmark.py names=[preprocessing]
"""

from __future__ import annotations

import importlib
import json
import platform
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf


def run_benchmarks(names: list[str], kwargs: dict | None = None, out_dir: str | Path = "outputs/benchmarks",
                   threads: int | None = None) -> dict[str, dict]:
    """Run ``assemblies.benchmarks.<name>.run(**kwargs[name])`` for each name; write ``<name>.json``."""
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available()}
    results = {}
    for name in names:
        module = importlib.import_module(f"assemblies.benchmarks.{name}")
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        figures = module.run(**(kwargs or {}).get(name, {}))
        results[name] = {"figures": figures, "machine": machine, "seconds": round(time.perf_counter() - started, 1)}
        (out / f"{name}.json").write_text(json.dumps(results[name], indent=2, default=str))
    (out / "all.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out.resolve()}")
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run_benchmarks(list(cfg.names), OmegaConf.to_container(cfg.kwargs, resolve=True), cfg.out_dir, cfg.threads)


if __name__ == "__main__":
    main()
