"""The golden reference directory's own manifest (``manifest.json``: every file's size and sha256)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def manifest_problems(directory: Path) -> list[str]:
    """Files of ``manifest.json`` that are missing or whose size or sha256 differ; [] when all match."""
    problems = []
    for entry in json.loads((directory / "manifest.json").read_text())["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
            continue
        data = path.read_bytes()
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}... "
                            f"(manifest: {entry['bytes']} bytes, {entry['sha256'][:12]}...)")
    return problems
