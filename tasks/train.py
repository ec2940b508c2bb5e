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
SHOWS_CONFIG = ("--help", "-h", "--info", "-i")  # the info flags that compose the config


def _assemblies() -> list[str]:
    return sorted(f.stem for f in ASSEMBLIES.glob("*.yaml"))


def _picks_assembly(argv: list[str]) -> bool:
    return any(arg.lstrip("+~").startswith("assembly=") for arg in argv)


def assembly_missing(argv: list[str]) -> str | None:
    """The message to stop with when the command line picks no assembly, else None.

    ``conf/train.yaml`` leaves ``assembly`` out of its defaults (``+assembly=`` is the documented
    form), so without one Hydra would only report an unresolved ``${assembly}`` interpolation.
    """
    if _picks_assembly(argv) or any(arg in INFO_FLAGS for arg in argv):
        return None
    return (f"tasks/train.py: choose an assembly with +assembly=<name> (available: {', '.join(_assemblies())}), e.g.\n"
            f"  python tasks/train.py +assembly=mcpv45 scale=tiny")


def help_assembly(argv: list[str]) -> tuple[str, str] | None:
    """For ``--help`` / ``--info`` without an assembly: the one to compose with, and a note saying so."""
    if _picks_assembly(argv) or not any(arg in SHOWS_CONFIG for arg in argv):
        return None
    names = _assemblies()
    return names[0], (f"note: no assembly chosen, so the config above is +assembly={names[0]}'s. Add "
                      f"+assembly=<name> (available: {', '.join(names)}) to the command, e.g.\n"
                      f"  python tasks/train.py +assembly={names[0]} scale=tiny --help")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    if (message := assembly_missing(sys.argv[1:])) is not None:
        sys.exit(message)
    if (shown := help_assembly(sys.argv[1:])) is not None:
        # Beside the other overrides (argparse takes them as one list), else first (--info takes a value).
        overrides = [i for i, arg in enumerate(sys.argv) if i and "=" in arg and not arg.startswith("-")]
        sys.argv.insert(overrides[0] if overrides else 1, f"+assembly={shown[0]}")
    try:
        main()
    finally:
        if shown is not None:
            print(shown[1])
