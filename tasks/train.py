"""Train an assembly through its stages: ``python tasks/train.py +assembly=mcpv45 [scale=tiny]``.

A thin Hydra entry point over ``assemblies.training.pipeline.train(cfg) -> float`` (the value a
sweeper optimises); notebooks and examples call ``train`` directly. See conf/train.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from assemblies.training.config import register_schemas
from assemblies.training.pipeline import train

register_schemas()
ASSEMBLIES = Path(__file__).resolve().parents[1] / "conf" / "assembly"
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc")


def assembly_missing(argv: list[str]) -> str | None:
    """The message to stop with when the command line picks no assembly, else None.

    ``conf/train.yaml`` leaves ``assembly`` out of its defaults (``+assembly=`` is the documented
    form), so without one Hydra would only report an unresolved ``${assembly}`` interpolation.
    """
    if any(arg.lstrip("+~").startswith("assembly=") for arg in argv) or any(arg in INFO_FLAGS for arg in argv):
        return None
    names = ", ".join(sorted(f.stem for f in ASSEMBLIES.glob("*.yaml")))
    return (f"tasks/train.py: choose an assembly with +assembly=<name> (available: {names}), e.g.\n"
            f"  python tasks/train.py +assembly=mcpv45 scale=tiny")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    if (message := assembly_missing(sys.argv[1:])) is not None:
        sys.exit(message)
    main()
