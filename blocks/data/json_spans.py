"""Where the entries of a JSONL file or a JSON list lie in its text, without parsing them all.

A dataset keeps the file as one string plus an integer array of (start, end, line) rows; entries are
parsed one at a time when indexed, so one malformed line costs one counted skip naming ``file:line``,
and forked data-loader workers share the text instead of copying a list of dicts.
"""

from __future__ import annotations

import json

from blocks.data.errors import SampleError


def line_spans(text: str) -> list[tuple[int, int, int]]:
    """(start, end, line) of every non-blank line; lines are parsed (and may fail) one by one at access."""
    spans, start = [], 0
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if line.strip():
            spans.append((start, start + len(line), number))
        start += len(line)
    return spans


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
