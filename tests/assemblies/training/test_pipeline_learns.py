"""The tiny pipeline, cut short, still learns: held-out accuracy above chance by a margin on two tasks.

Stage0 (200 of its 800 steps) must retrieve dense captions, and stage3 (200 steps of 32 samples,
from stage0's weights) must read digits. A pipeline that silently stops learning (a frozen block or a
zero learning rate, a broken schedule, loss, labels or data) stays near chance on both; the margin
leaves room for another CPU's numbers.
"""

from __future__ import annotations

import json

import pytest

from assemblies.presets import compose_config
from assemblies.training.pipeline import train

MARGIN = 0.1  # a stuck pipeline stays within a few hundredths of chance on 48 held-out samples
SHORT = ["+assembly=mcpv45", "scale=tiny", "pipeline.stages=[stage0,stage3]",
         "stages.stage0.max_steps=200", "stages.stage0.heldout=[dense_captions]",
         "stages.stage3.max_steps=200", "stages.stage3.batch_size=32", "~stages.stage3.data.mix",
         "+stages.stage3.data.mix={digits: 0.6, scenes: 0.4}", "data.heldout=[digits]", "data.heldout_size=48",
         "trainer.enable_progress_bar=false", "pipeline.export=false", "pipeline.plots=false"]


@pytest.mark.slow
def test_a_short_tiny_pipeline_learns_to_retrieve_captions_and_to_read_digits(tmp_path):
    train(compose_config([*SHORT, f"paths.output_dir={tmp_path}"]))
    stage0, stage3 = (json.loads((tmp_path / stage / "result.json").read_text())["tasks"]
                      for stage in ("stage0", "stage3"))
    learned = {"dense_caption": stage0["dense_caption"], "digit": stage3["digit"]}
    for task, result in learned.items():
        assert result["acc"] >= result["chance"] + MARGIN, (task, result)
