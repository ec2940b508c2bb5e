"""Every golden file is the one its generator wrote: the manifest's sizes and hashes hold, and a
changed byte is caught (the golden_dir fixture runs this check before any parity test reads a file)."""

from __future__ import annotations

import json
import shutil

from golden_manifest import manifest_problems


def test_every_golden_file_matches_the_manifest(golden_dir):
    files = json.loads((golden_dir / "manifest.json").read_text())["files"]
    assert len(files) > 20 and manifest_problems(golden_dir) == []


def test_a_changed_or_missing_file_is_named(golden_dir, tmp_path):
    copy = tmp_path / "golden"
    shutil.copytree(golden_dir, copy)
    data = bytearray((copy / "blocks" / "resampler.json").read_bytes())
    data[100] ^= 1
    (copy / "blocks" / "resampler.json").write_bytes(bytes(data))
    (copy / "slicing.json").unlink()
    problems = manifest_problems(copy)
    assert len(problems) == 2
    assert problems[0].startswith("blocks/resampler.json: 7484 bytes, sha256 ") and problems[1] == "slicing.json: missing"
