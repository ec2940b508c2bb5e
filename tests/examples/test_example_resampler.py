"""Runs examples/01_resampler.py as a script and checks the token counts it reports."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01_resampler.py"


def test_example_prints_3d_and_2d_token_counts(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    # 16x16 + 2 x 12x20 image patches + 6 frames of 16x16 = 2,272 patches; 4 groups of 16 queries (3-D)
    # vs 9 slices/frames of 16 queries (2-D).
    assert "input: 2272 patches in 9 slices/frames, 4 groups" in out
    assert "3d: (64, 64) tokens; the video group yields 16 (6 frames, 1536 patches -> 16: 96x compression)" in out
    assert "2d: (144, 64) tokens; the video group yields 96" in out
