"""The check a data file gets when it is opened: every entry's JSON parsed once, for its id (nothing
else is validated and no media touched), so that a file none of whose entries parses stops the run
before training, with the reasons, and duplicate sample ids are reported once per file instead of
passing without a word. Entries that parse but are bad otherwise stay counted skips at access; a
corpus none of whose samples builds is stopped by ``blocks.data.dataset.first_usable``."""

from __future__ import annotations

import logging
from typing import Callable

from blocks.data.dataset import SkipReport
from blocks.data.errors import SampleError

log = logging.getLogger(__name__)
DUPLICATE_POLICIES = ("warn", "error")
_SHOWN = 10  # duplicate ids named in the message


def scan_entries(identify: Callable[[int], tuple[str, str]], count: int, name: str, duplicate_ids: str = "warn") -> None:
    """Parse entries ``0..count-1`` with ``identify(i) -> (sample id, "file:line")`` (raising ``SampleError``).

    Logs one warning with the table of unusable entries (they stay counted skips at access) and, under
    ``duplicate_ids="warn"``, one naming the ids used more than once and their lines.

    Raises:
        SampleError: no entry (``no_samples``), no entry that ``identify`` accepts (the table of reasons), or duplicate
            ids under ``duplicate_ids="error"`` (``duplicate_ids``).
    """
    if duplicate_ids not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicate_ids must be one of {DUPLICATE_POLICIES}, got {duplicate_ids!r}")
    if count == 0:
        raise SampleError(f"no samples in {name}", where=name, reason="no_samples")
    bad, places = SkipReport(), {}
    for index in range(count):
        try:
            sample_id, where = identify(index)
        except SampleError as error:
            bad.add(error.where or error.sample_id, error.reason)
            continue
        places.setdefault(sample_id, []).append(where.rsplit(":", 1)[-1])
    bad.used = sum(len(lines) for lines in places.values())
    if not places:
        raise SampleError(f"no usable samples in {name}: all {count} entries are bad\n{bad.table()}", where=name,
                          reason="no_samples")
    if bad.skipped:
        log.warning("%s: %d of %d entries cannot be used and will be skipped\n%s", name, bad.skipped, count,
                    bad.table())
    repeated = {sample_id: lines for sample_id, lines in places.items() if len(lines) > 1}
    if not repeated:
        return
    listed = ", ".join(f"{sample_id!r} (lines {', '.join(lines)})" for sample_id, lines in list(repeated.items())[:_SHOWN])
    more = f" and {len(repeated) - _SHOWN} more" if len(repeated) > _SHOWN else ""
    message = f"{len(repeated)} sample id(s) used by more than one entry: {listed}{more}"
    if duplicate_ids == "error":
        raise SampleError(message, where=name, reason="duplicate_ids")
    log.warning("%s: %s", name, message)
