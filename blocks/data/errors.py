"""Errors for bad input. Each names the sample and where it came from (file, line), so a dataset can
report it as a counted skip, or a user can fix the file."""

from __future__ import annotations


class SampleError(ValueError):
    """A sample that cannot be used. ``where`` is e.g. ``"train.jsonl:17"`` or an image path."""

    def __init__(self, message: str, *, sample_id: str = "", where: str = "", reason: str = "") -> None:
        self.sample_id, self.where = sample_id, where
        self.reason = reason or type(self).__name__
        location = " ".join(part for part in (f"[{where}]" if where else "", f"sample {sample_id!r}" if sample_id else "") if part)
        super().__init__(f"{location}: {message}" if location else message)


class MediaError(SampleError):
    """An image or video that is missing, corrupt, empty, too large or of an unsupported kind."""


class SampleTooLong(SampleError):
    """A sample that exceeds the length limit even with the fewest slices/frames allowed."""
