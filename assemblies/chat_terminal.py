"""The terminal front end of ``Chat`` (``tasks/chat.py``): one question, or an interactive loop.

Replies stream to ``out`` as they are generated; a status line (finish reason, token counts) goes to
``err``. In the loop, a line is a message, except the commands in ``HELP``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import torch

from assemblies.chat import Chat, ChatResponse
from blocks.data.processor_config import MODEL_CONFIG_FILE, PREPROCESSOR_FILE, ProcessorConfig
from blocks.data.tokenizer import load_tokenizer
from blocks.generation.tokens import token_id

HELP = """commands:
  /image <path>   attach an image to your next message
  /video <path>   attach a video to your next message
  /think          switch thinking mode on or off
  /reset          start a new conversation
  /exit           quit (or end of input)"""
CLI_HINT = ("on the command line: tokenizer=<dir>, processor.scale_resolution=112 processor.max_slice_nums=1 "
            "(the tiny pipeline's settings), stop_tokens='[\"<|im_end|>\",\"<|endoftext|>\"]'")


def load_chat(checkpoint: str | Path, tokenizer: str | None = None, processor: Mapping[str, Any] | None = None,
              stop_tokens: Sequence[str] | None = None, dtype: str = "float32", video_fps: float = 3.0) -> Chat:
    """``Chat.from_checkpoint`` with command-line style arguments for what the directory lacks.

    ``processor``: ``ProcessorConfig`` fields (None values ignored) over the directory's
    ``preprocessor_config.json``, or over the defaults with ``config.json``'s ``query_num`` when absent.

    Raises:
        SystemExit: the checkpoint lacks a file; the message says what to add on the command line.
    """
    directory = Path(checkpoint)
    fields = {k: v for k, v in (processor or {}).items() if v is not None}
    config = None
    if fields and (directory / PREPROCESSOR_FILE).is_file():
        config = ProcessorConfig.from_checkpoint(directory, **fields)
    elif fields:
        query_num = json.loads((directory / MODEL_CONFIG_FILE).read_text()).get("query_num", 64)
        config = ProcessorConfig(**{"tokens_per_group": query_num, **fields})
    tok = load_tokenizer(tokenizer) if tokenizer else None
    stops = None
    if stop_tokens:
        if tok is None:
            raise SystemExit("stop_tokens needs the tokenizer: pass tokenizer=<dir> too")
        stops = [token_id(tok, t) for t in stop_tokens]
    try:
        return Chat.from_checkpoint(directory, tokenizer=tok, processor_config=config, stop_token_ids=stops,
                                    dtype=getattr(torch, dtype), video_fps=video_fps)
    except FileNotFoundError as error:
        raise SystemExit(f"{error}\n{CLI_HINT}") from error


def reply(chat: Chat, messages: list[dict], thinking: bool, options: Mapping[str, Any], out: TextIO,
          err: TextIO) -> ChatResponse:
    """Stream one reply to ``out`` (in thinking mode, after ``<think>``) and its status line to ``err``."""
    options = dict(options)
    if not thinking:
        options.pop("thinking_budget", None)  # the budget only means something in thinking mode
    stream = chat.chat(messages, enable_thinking=thinking, stream=True, **options)
    if thinking:
        out.write("<think>\n")
    for piece in stream:
        out.write(piece)
        out.flush()
    response = stream.response
    out.write("\n")
    err.write(f"[{response.finish_reason}: {response.prompt_tokens} prompt + {response.generated_tokens} "
              f"generated tokens]\n")
    return response


def one_shot(chat: Chat, prompt: str, images: Sequence[str] = (), videos: Sequence[str] = (), thinking: bool = False,
             options: Mapping[str, Any] | None = None, out: TextIO = sys.stdout,
             err: TextIO = sys.stderr) -> ChatResponse:
    """Ask one question about ``images`` and ``videos`` (paths), streaming the reply."""
    content = [Path(p) for p in (*images, *videos)] + [prompt]
    return reply(chat, [{"role": "user", "content": content}], thinking, options or {}, out, err)


def interactive(chat: Chat, thinking: bool = False, options: Mapping[str, Any] | None = None,
                lines: TextIO = sys.stdin, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> list[dict]:
    """A conversation read from ``lines`` until ``/exit`` or end of input; returns its messages."""
    messages: list[dict] = []
    attached: list[Path] = []
    out.write(f"{HELP}\nthinking: {'on' if thinking else 'off'}\n")
    while True:
        out.write("> ")
        out.flush()
        line = lines.readline()
        if not line or line.strip() == "/exit":
            out.write("\n")
            return messages
        command, _, argument = line.strip().partition(" ")
        if command in ("/image", "/video"):
            path = Path(argument.strip()).expanduser()
            if path.is_file():
                attached.append(path)
                out.write(f"attached {path.name}\n")
            else:
                err.write(f"no such file: {path}\n")
        elif command == "/think":
            thinking = not thinking
            out.write(f"thinking: {'on' if thinking else 'off'}\n")
        elif command == "/reset":
            messages, attached = [], []
            out.write("new conversation\n")
        elif command.startswith("/"):
            out.write(HELP + "\n")
        elif line.strip():
            turn = {"role": "user", "content": [*attached, line.strip()]}
            try:
                response = reply(chat, messages + [turn], thinking, options or {}, out, err)
            except (ValueError, OSError) as error:  # a bad file or setting: say so, keep the conversation
                err.write(f"error: {error}\n")
                continue
            messages += [turn, response.message()]
            attached = []
