"""Train an assembly through its stages: ``python tasks/train.py +assembly=mcpv45 [scale=tiny]``.

A thin Hydra entry point over ``assemblies.training.pipeline.train(cfg) -> float`` (the value a
sweeper optimises); notebooks and examples call ``train`` directly. See conf/train.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from assemblies.training.config import register_schemas  # noqa: E402
from assemblies.training.pipeline import train  # noqa: E402

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
