"""Print a model's parameters per block and the training memory of each stage (built on meta, instant).

    python tasks/inspect.py +assembly=mcpv45
    python tasks/inspect.py +assembly=mcpv45 scale=tiny resampler=mlp gpus=[1,8] precision=32-true
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path, and this file would shadow the standard
# library's ``inspect`` for every later import; the repository root takes that slot instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from assemblies.memory import format_report, inspect_model  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="inspect")
def main(cfg: DictConfig) -> dict:
    report = inspect_model(cfg)
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
