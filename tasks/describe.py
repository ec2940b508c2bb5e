"""Print a model's parameters per block and the training memory of each stage of its recipe, in
pipeline order (built on meta, instant).

    python tasks/describe.py +assembly=mcpv45
    python tasks/describe.py +assembly=mcpv45 scale=tiny resampler=mlp gpus=[1,8] precision=bf16-mixed
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from assemblies.memory import describe_model, format_report
from assemblies.training.config import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="describe")
def main(cfg: DictConfig) -> dict:
    report = describe_model(cfg)
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
