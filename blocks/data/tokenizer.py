"""Tokenizers: the official one from a local directory, or a tiny byte-level BPE for CPU-sized models.

``load_tokenizer(dir)`` never downloads and never runs repository code. MiniCPM-V 4.5's
``tokenizer_config.json`` names a custom class (``MiniCPMVTokenizerFast``, remote code) and ships no
``tokenizer.json``, only ``vocab.json`` + ``merges.txt``; that class is a thin subclass of Qwen2's
byte-level BPE, so such directories load as ``Qwen2Tokenizer`` with the added tokens and chat template
of the config (verified id for id against the official goldens in ``tests``).

``tiny_tokenizer()`` trains a byte-level BPE of at most ``vocab_size`` entries in a few seconds, with the
official added tokens (same strings and special flags, minus the 63 ``<|reserved_k|>``) and the official
chat template, so every prompt, placeholder and label rule works unchanged on a tiny model. It is cached
on disk under a hash of (texts, vocab size) and is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from blocks.data.chat import QWEN3_CHAT_TEMPLATE

# (token, special) in the official id order; <think> etc. are added but not special (kept by decode).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<unk>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
    ("<image>", True), ("</image>", True), ("<ref>", True), ("</ref>", True), ("<box>", True), ("</box>", True),
    ("<quad>", True), ("</quad>", True), ("<point>", True), ("</point>", True), ("<slice>", True),
    ("</slice>", True), ("<image_id>", True), ("</image_id>", True), ("<unit>", True), ("</unit>", True),
)
ROLE_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "unk_token": "<unk>"}
# Qwen2/3's pre-tokenizer split: single digits, a run of newlines stays one piece ("\n\n" of the think
# block), punctuation keeps trailing newlines.
_QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
# tokenizer_config.json classes that are a plain tokenizer.json (transformers 4.x / 5.x names).
_PLAIN_FAST_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
_TINY_FORMAT = "mcpv-tiny-bpe-v3"  # bump when the training recipe changes, to invalidate caches
# Text of the chat scaffold that every sample contains but task corpora do not (role names, the blank
# line of the think block): weighted so BPE gives each a single token.
_SCAFFOLD = ("system\n", "user\n", "assistant\n", "\n\n")


def load_tokenizer(directory: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a Hugging Face tokenizer from a local directory (no network, no remote code).

    Raises:
        FileNotFoundError: the directory has neither ``tokenizer.json`` nor ``vocab.json`` + ``merges.txt``.
    """
    directory = Path(directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    if config.get("tokenizer_class") in _PLAIN_FAST_CLASSES and (directory / "tokenizer.json").exists():
        # What tiny_tokenizer saves; AutoTokenizer would also read (and warn about) a model config.json beside it.
        return PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    if "auto_map" not in config and config.get("tokenizer_class"):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    if (directory / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    if (directory / "vocab.json").exists() and (directory / "merges.txt").exists():
        # A custom class (auto_map) over Qwen2's byte-level BPE, as MiniCPM-V 4.x ships it.
        from transformers import Qwen2Tokenizer
        return Qwen2Tokenizer.from_pretrained(directory, local_files_only=True)
    raise FileNotFoundError(f"{directory}: no tokenizer.json and no vocab.json + merges.txt")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MCPV_CACHE", Path.home() / ".cache" / "mcpv"))


def _cache_key(texts: list[str], vocab_size: int) -> str:
    digest = hashlib.sha256(f"{_TINY_FORMAT}\0{vocab_size}\0".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _train_tiny(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    added = [AddedToken(t, special=s, normalized=False) for t, s in ADDED_TOKENS]
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(added) + len(byte_alphabet):
        raise ValueError(f"vocab_size {vocab_size} < {len(added)} added tokens + {len(byte_alphabet)} bytes")
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=added, initial_alphabet=byte_alphabet,
                                  show_progress=False)
    scaffold = [text for text in _SCAFFOLD for _ in range(max(1, len(texts) // 10))]
    backend.train_from_iterator(texts + scaffold, trainer)
    # The trainer registers every reserved token as special; restore the official flags so that
    # decode(skip_special_tokens=True) keeps <think> etc., as the official tokenizer does.
    serialized = json.loads(backend.to_str())
    flags = dict(ADDED_TOKENS)
    for entry in serialized["added_tokens"]:
        entry["special"] = flags[entry["content"]]
    backend = Tokenizer.from_str(json.dumps(serialized))
    specials = [t for t, s in ADDED_TOKENS if s and t not in ROLE_TOKENS.values()]
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=QWEN3_CHAT_TEMPLATE,
                                   additional_special_tokens=specials, **ROLE_TOKENS)


def tiny_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 1024,
                   cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """A small byte-level BPE with the official added tokens and chat template.

    Args:
        texts: training strings; None trains on ``blocks.data.synthetic.tokenizer_corpus()``.
        vocab_size: total size including the added tokens and the 256 byte symbols.
        cache_dir: where trained tokenizers are kept (default ``$MCPV_CACHE`` or ``~/.cache/mcpv``).
    """
    if texts is None:
        from blocks.data.synthetic import tokenizer_corpus
        texts = tokenizer_corpus()
    texts = list(texts)
    if not texts:
        raise ValueError("tiny_tokenizer needs at least one training text")
    name = f"tiny-{vocab_size}-{_cache_key(texts, vocab_size)}"
    target = Path(cache_dir or default_cache_dir()) / "tokenizers" / name
    if not (target / "tokenizer.json").exists():
        tokenizer = _train_tiny(texts, vocab_size)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Save next to the target and rename: concurrent data-loader workers never see half a directory.
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race; its copy is identical
            for item in staging.iterdir():
                item.unlink()
            staging.rmdir()
    return PreTrainedTokenizerFast.from_pretrained(target, local_files_only=True)
