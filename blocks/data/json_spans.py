"""Where the entries of a JSONL file or a JSON list lie in its text, without parsing them all.

A dataset keeps the file as one string plus an integer array of (start, end, line) rows; entries are
parsed one at a time when indexed, so one malformed line costs one counted skip naming ``file:line``,
and forked data-loader workers share the text instead of copying a list of dicts.

The text is decoded with ``surrogateescape``: an invalid UTF-8 byte becomes one lone surrogate
(U+DC80..U+DCFF, which valid UTF-8 never decodes to) in its own entry, so that entry is refused when
indexed (``invalid_utf8``) and the rest of the file is used.
"""

from __future__ import annotations

import json
import re

from blocks.data.errors import SampleError

_BOM = b"\xef\xbb\xbf"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
EXPECTED_FORMAT = "a JSON list of samples, or JSONL (one sample object a line)"


def decode_data_file(raw: bytes) -> str:
    """The text of a data file: a leading UTF-8 byte-order mark dropped, invalid bytes kept as lone surrogates."""
    return raw[len(_BOM):].decode("utf-8", "surrogateescape") if raw.startswith(_BOM) else \
        raw.decode("utf-8", "surrogateescape")


def refuse_invalid_utf8(segment: str, name: str, line: int) -> None:
    """Raise ``SampleError`` (``invalid_utf8``, naming ``name:line`` and the column) if the entry ``segment``
    starting at ``line`` holds an undecodable byte."""
    found = _ESCAPED_BYTE.search(segment)
    if found is None:
        return
    at, byte = found.start(), ord(found.group()) - 0xDC00
    column, lines_in = at - segment.rfind("\n", 0, at), segment.count("\n", 0, at)
    raise SampleError(f"invalid UTF-8 byte 0x{byte:02x} at column {column}", where=f"{name}:{line + lines_in}",
                      reason="invalid_utf8")


def line_spans(text: str, name: str) -> list[tuple[int, int, int]]:
    """(start, end, line) of every non-blank line of a JSONL text; lines are parsed (and may fail) one by one
    at access. Only ``\\n`` ends a line (``\\r\\n`` too): U+2028, U+2029 and U+0085 are legal inside JSON strings.

    Raises:
        SampleError: the whole text is one JSON value that is not a one-line object (e.g. a pretty-printed
            object), which a JSONL reader would only see as malformed lines.
    """
    _refuse_single_value(text, name)
    spans, start, number = [], 0, 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        number += 1
        if text[start:end].strip():
            spans.append((start, end, number))
        start = end
    return spans


def _refuse_single_value(text: str, name: str) -> None:
    try:
        value = json.loads(text)  # a JSONL file of several lines fails at once, after its first object
    except json.JSONDecodeError:
        return
    if isinstance(value, dict) and len(text.strip().split("\n")) == 1:
        return  # JSONL with one sample
    kind = f"one JSON object (keys {sorted(value)[:8]})" if isinstance(value, dict) else f"a JSON {type(value).__name__}"
    raise SampleError(f"expected {EXPECTED_FORMAT}; the file holds {kind}", where=name, reason="bad_format")


def list_spans(text: str, name: str) -> list[tuple[int, int, int]]:
    """(start, end, line) of every entry of a JSON list; a malformed list fails here, naming its line."""
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int, int]] = []
    position, line, counted_to = text.index("[") + 1, 1, 0

    def skip_blank(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    position = skip_blank(position)
    if position < len(text) and text[position] == "]":
        return spans
    while True:
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as failure:
            raise SampleError(f"malformed JSON list: {failure.msg} at column {failure.colno}",
                              where=f"{name}:{failure.lineno}", reason="malformed_json") from failure
        line += text.count("\n", counted_to, position)
        counted_to = position
        spans.append((position, end, line))
        position = skip_blank(end)
        if position < len(text) and text[position] == ",":
            position = skip_blank(position + 1)
        elif position < len(text) and text[position] == "]":
            return spans
        else:
            at_line = line + text.count("\n", counted_to, position)
            raise SampleError("malformed JSON list: expected ',' or ']' after an entry", where=f"{name}:{at_line}",
                              reason="malformed_json")
