"""Runs examples/04_finetune_data.py end to end (real processor, tiny tokenizer) and checks its numbers."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "04_finetune_data.py"


def test_example_batches_good_entries_and_reports_the_bad_ones(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("finetune_data_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--out", str(tmp_path)])
    assert report.used == 5 and report.skipped == 3
    assert report.counts == {"missing_file": 1, "malformed_json": 1, "SampleTooLong": 1}
    assert report.examples == {"missing_file": ["lost"], "malformed_json": ["train.jsonl:6"], "SampleTooLong": ["essay"]}
    out = capsys.readouterr().out
    measured = [int(n) for n in re.search(r"tokens per entry: \[([\d, ]+)\]", out).group(1).split(",")]
    estimated = [int(n) for n in re.search(r"header-only estimate: \[([\d, ]+)\]", out).group(1).split(",")]
    # The header-only estimate is within 3 % of the real processor for every entry that loads.
    assert all(abs(e - m) <= 0.03 * m for m, e in zip(measured, estimated) if m)
    assert "samples: 8 seen, 5 used, 3 skipped (37.50 %)" in out
    video_line = next(line for line in out.splitlines() if "'video'" in line)
    # 8 frames packed 2 per group: 4 groups, 8 frames with their temporal ids (0.1 s units).
    assert "2, 2, 2, 2" in video_line and "1, 3, 6, 8, 11, 13, 16, 18" in video_line
    assert (tmp_path / "train.jsonl").exists() and len(list((tmp_path / "images").glob("*.png"))) == 3
