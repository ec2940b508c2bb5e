"""Load a Qwen3 LLM from a HF-format directory (config.json + safetensors) into an assembly's ``llm``.

Used to start MiniCPM-V training from a released text-only LLM. The directory's config is checked
against the slot's config first (same sizes, same RoPE), so a wrong model fails with the list of
differing fields rather than a wall of shape errors or, worse, silently different positions.

The vocabulary may differ: Qwen3 embeds 151,936 rows, MiniCPM-V 4.5 151,748 (Qwen3's 151,669 tokens
and 79 of its own: ``<image>``, ``<slice>``, ``<|reserved_k|>``...). The embedding and LM head are
then resized to the slot's rows: a token both tokenizers have keeps its row (matched by its string
when the directory holds a tokenizer, else by id), and every other row is the mean of the
checkpoint's token rows, the usual start for new tokens.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from assemblies.checkpoints.files import checkpoint_files, read_tensor
from assemblies.checkpoints.official import load_tensors_into
from blocks.data.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
# Fields that change the function the weights compute, beyond what tensor shapes reveal.
_MUST_MATCH = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "rms_norm_eps", "tie_word_embeddings", "hidden_act")
VOCAB_KEYS = ("model.embed_tokens.weight", "lm_head.weight")


def _rope_theta(config: dict) -> float:
    return float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))


def vocabulary_rows(rows: int, source_rows: int, tokenizer: PreTrainedTokenizerBase | None,
                    source_vocab: dict[str, int] | None) -> Tensor:
    """[rows] long: the checkpoint row each of the slot's rows takes, -1 for a new token (mean row).

    With both vocabularies a token keeps the row of the same string; rows past the slot's tokenizer
    (padding) keep the checkpoint row of the same id. Without them, rows are matched by id.
    """
    index = torch.arange(rows)
    index[index >= source_rows] = -1
    if tokenizer is None or source_vocab is None:
        return index
    for token, row in tokenizer.get_vocab().items():
        if row < rows:
            source = source_vocab.get(token, -1)
            index[row] = source if source < source_rows else -1
    return index


def _resized(tensor: Tensor, index: Tensor, token_rows: int) -> Tensor:
    """``tensor`` rows picked by ``index``; -1 rows get the mean of the first ``token_rows`` (the real tokens)."""
    mean = tensor[:token_rows].double().mean(0).to(tensor.dtype)
    out = tensor[index.clamp(min=0)]
    out[index < 0] = mean
    return out


def _load_resized_vocabulary(llm: nn.Module, directory: Path, files: dict, tokenizer: PreTrainedTokenizerBase | None,
                             dtype: torch.dtype | None) -> None:
    """Resize the checkpoint's embedding (and untied LM head) to ``llm``'s rows and load them."""
    rows = llm.get_input_embeddings().num_embeddings
    has_tokenizer = (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file()
    source_tokenizer = load_tokenizer(directory) if tokenizer is not None and has_tokenizer else None
    source_vocab = source_tokenizer.get_vocab() if source_tokenizer is not None else None
    tensors = {}
    for key in VOCAB_KEYS:
        if key not in files:
            continue
        source = read_tensor(files, key)
        index = vocabulary_rows(rows, source.shape[0], tokenizer, source_vocab)
        token_rows = min(len(source_tokenizer), source.shape[0]) if source_tokenizer is not None else source.shape[0]
        tensors[key] = _resized(source, index, token_rows).to(dtype or source.dtype)
    new = int((index < 0).sum())
    log.info("%s: vocabulary %d -> %d rows (%s); %d rows kept, %d new rows from the mean", directory,
             source.shape[0], rows, "matched by token" if source_vocab else "matched by id", rows - new, new)
    llm.load_state_dict(tensors, strict=False, assign=any(p.is_meta for p in llm.parameters()))


def load_qwen3_llm(llm: nn.Module, directory: str | Path, dtype: torch.dtype | None = None,
                   tokenizer: PreTrainedTokenizerBase | None = None) -> nn.Module:
    """Strictly load the HF-format Qwen3 checkpoint in ``directory`` into ``llm`` (e.g. ``model.llm``).

    Args:
        llm: a Qwen3 causal LM (keys ``model.*``, ``lm_head.weight``); real or meta parameters.
        directory: ``save_pretrained`` output: config.json + model.safetensors (or shards + index).
        dtype: dtype of the loaded tensors when ``llm`` is on meta; a materialised ``llm`` keeps its own.
        tokenizer: the tokenizer ``llm`` will be trained with; with it (and a tokenizer in ``directory``)
            a vocabulary of another size keeps each shared token's row (see the module docstring).

    Raises:
        ValueError: config fields differ, or keys/shapes do not match (all listed).
    """
    directory = Path(directory)
    theirs = json.loads((directory / "config.json").read_text())
    ours = llm.config.to_dict()
    differing = {k: (theirs.get(k), ours.get(k)) for k in _MUST_MATCH if k in theirs and theirs[k] != ours.get(k)}
    if _rope_theta(theirs) != _rope_theta(ours):
        differing["rope_theta"] = (_rope_theta(theirs), _rope_theta(ours))
    if differing:
        raise ValueError(f"{directory}/config.json differs from the LLM slot (checkpoint, slot): {differing}")
    files = checkpoint_files(directory)
    # A tied checkpoint stores no lm_head.weight: it is the embedding.
    optional = {"lm_head.weight"} if llm.config.tie_word_embeddings else set()
    if theirs.get("vocab_size", ours["vocab_size"]) != ours["vocab_size"] or tokenizer is not None:
        _load_resized_vocabulary(llm, directory, files, tokenizer, dtype)
        files = {name: file for name, file in files.items() if name not in VOCAB_KEYS}
        optional |= set(VOCAB_KEYS)
    load_tensors_into(llm, files, str(directory), dtype, optional=frozenset(optional))
    return llm
