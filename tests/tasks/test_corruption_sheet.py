"""tasks/corruption_sheet.py: the PNG grid of corruption levels, through the function and the CLI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from blocks.data.corruption import CorruptionConfig

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("corruption_sheet", ROOT / "tasks" / "corruption_sheet.py")
sheet_task = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sheet_task)


def test_sheet_has_one_column_per_level_and_levels_differ(tmp_path):
    path = sheet_task.write_corruption_sheet(tmp_path / "sub" / "sheet.png", CorruptionConfig(), rows=2, seed=1, zoom=2)
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (4 * (224 + 6) + 6, 2 * (224 + 18 + 6) + 6) == (926, 502)
    assert image.size == sheet_task.sheet_size(2, 4, 2)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    top = 6 + 18
    cells = [pixels[top:top + 224, 6 + k * 230:6 + k * 230 + 224] for k in range(4)]
    # Same page in every column, only the target region differs: clean < light < heavy in change.
    diffs = [np.abs(cell - cells[0]).mean() for cell in cells[1:]]
    assert 0 < diffs[0] < diffs[1] and diffs[2] > 0, diffs
    # The label strip holds white text.
    assert (pixels[6:top, 6:230] == 255).all(-1).any()


def test_hydra_config_composes_with_each_corruption_option(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for option, levels in (("default", ["clean", "light", "heavy", "masked"]), ("readable", ["clean", "light"])):
            cfg = compose("corruption_sheet", overrides=[f"corruption={option}", "rows=1", "zoom=1"])
            corruption = OmegaConf.to_container(cfg.corruption, resolve=True)
            config = CorruptionConfig.from_dict(corruption)
            assert [k for k, p in config.probabilities.items() if p > 0] == levels
            path = sheet_task.write_corruption_sheet(tmp_path / f"{option}.png", corruption, cfg.rows, cfg.seed,
                                                     cfg.zoom)
            assert Image.open(path).size == sheet_task.sheet_size(1, 4, 1)


def test_command_line_writes_the_png(tmp_path):
    out = tmp_path / "cli.png"
    result = subprocess.run([sys.executable, str(ROOT / "tasks" / "corruption_sheet.py"), f"output={out}", "rows=1",
                             "zoom=1", f"hydra.run.dir={tmp_path / 'hydra'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (4 * 118 + 6, 112 + 18 + 6 + 6)
