"""Train an assembly through its stages: ``python tasks/train.py +assembly=mcpv45 [scale=tiny]``.

A thin Hydra entry point over ``assemblies.training.pipeline.train(cfg) -> float`` (the value a
sweeper optimises); notebooks and examples call ``train`` directly. See conf/train.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, tasks/ leads sys.path and tasks/inspect.py would shadow the standard library's
# ``inspect`` (imported by dataclasses, hydra, ...): the repository root takes that slot instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from assemblies.training.config import register_schemas  # noqa: E402
from assemblies.training.pipeline import train  # noqa: E402

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
