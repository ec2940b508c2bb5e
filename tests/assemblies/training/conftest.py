"""Composed tiny training configs for the training tests (compose API, no Hydra run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from assemblies.presets import compose_config

# A pipeline that runs in seconds: two-record batches, one held-out corpus, no loader workers.
FAST = ["+assembly=mcpv45", "scale=tiny", "+debug=fast", "data.heldout=[digits]", "data.heldout_size=4",
        "pipeline.plots=false", "trainer.enable_progress_bar=false", "logger=csv"]


@pytest.fixture
def fast_cfg(tmp_path: Path):
    """``fast_cfg(*overrides)`` -> a composed tiny config writing into ``tmp_path``."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config([*FAST, f"paths.output_dir={output_dir or tmp_path}", *overrides])

    return make
