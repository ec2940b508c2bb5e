"""The token ids generation needs from a tokenizer: terminators, visual placeholders, think tags."""

from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedTokenizerBase

from blocks.data.chat import THINK_CLOSE, THINK_OPEN
from blocks.data.placeholders import MARKERS, MarkerTokens

# MiniCPM-V 4.5's terminators (the official chat's `terminators`, generation_config.json's eos ids).
DEFAULT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of a single-token string.

    Raises:
        KeyError: the tokenizer has no such token (``convert_tokens_to_ids`` would return ``<unk>``).
    """
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise KeyError(f"the tokenizer has no token {token!r}")
    return vocab[token]


def placeholder_token_ids(tokenizer: PreTrainedTokenizerBase, markers: MarkerTokens = MARKERS) -> tuple[int, ...]:
    """Ids a model must never generate: ``<unk>`` (the visual-token slots) and every image/slice/id marker."""
    names = (markers.unk, *markers.span_starts, *markers.span_ends, markers.im_id_start, markers.im_id_end)
    return tuple(sorted({token_id(tokenizer, name) for name in names}))


def generation_token_ids(tokenizer: PreTrainedTokenizerBase,
                         stop_tokens: Sequence[str] = DEFAULT_STOP_TOKENS) -> dict[str, object]:
    """``GenerationConfig`` fields for this tokenizer: stop ids, banned placeholder ids, think tag ids."""
    return {"stop_token_ids": tuple(token_id(tokenizer, t) for t in stop_tokens),
            "banned_token_ids": placeholder_token_ids(tokenizer),
            "think_open_id": token_id(tokenizer, THINK_OPEN), "think_close_id": token_id(tokenizer, THINK_CLOSE)}
