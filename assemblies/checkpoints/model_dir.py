"""A self-contained model directory: the official layout plus everything needed to use the weights.

``export_model_dir(model, dir, tokenizer, processor_config)`` writes what the released MiniCPM-V 4.5
repository holds, except its Python files:

- ``config.json`` + safetensors shards + index (``export_official``), with the slice resolution and
  ``max_slice_nums`` the model was trained with and the tokenizer's bos/eos ids;
- the tokenizer the model was trained with (its files copied as they are, so an official tokenizer
  keeps its ``MiniCPMVTokenizerFast`` class);
- ``preprocessor_config.json`` (``ProcessorConfig.preprocessor_config``) and ``generation_config.json``
  (stop ids ``<|im_end|>`` and ``<|endoftext|>``, pad id, the official sampling defaults).

Every ``auto_map`` names the official repository's remote code (``openbmb/MiniCPM-V-4_5--module.Class``,
see ``remote_code_map``); docs/checkpoints.md says why. The toolkit's own loaders ignore ``auto_map``:
``Chat.from_checkpoint(dir)`` reads such a directory with no other argument.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedTokenizerBase

from assemblies.checkpoints.official import DEFAULT_SHARD_BYTES, export_official, official_config, remote_code_map
from assemblies.mllm import MiniCPMV
from blocks.data.processor_config import PREPROCESSOR_FILE, ProcessorConfig
from blocks.data.tokenizer import load_tokenizer
from blocks.generation.tokens import DEFAULT_STOP_TOKENS, token_id

GENERATION_FILE = "generation_config.json"
# Every file a Hugging Face tokenizer directory may hold (transformers 4.x and 5.x).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json")
# The released generation_config.json's sampling fields (the official chat() overrides them; engines read them).
OFFICIAL_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
                     "chat_template_kwargs": {"enable_thinking": False}}


def trained_processor_config(config: ProcessorConfig, model: MiniCPMV) -> ProcessorConfig:
    """``config`` as a checkpoint states it: the resampler's token count per slice as a number, no length cap."""
    side = config.scale_resolution // config.patch_size
    return replace(config, tokens_per_group=int(model.resampler.tokens_per_group([(side, side)])), max_length=None)


def generation_config(tokenizer: PreTrainedTokenizerBase) -> dict:
    """``generation_config.json`` for ``tokenizer``: the official file's fields with this tokenizer's ids."""
    endoftext = token_id(tokenizer, "<|endoftext|>")
    return {"bos_token_id": endoftext, **OFFICIAL_SAMPLING,
            "eos_token_id": [token_id(tokenizer, t) for t in DEFAULT_STOP_TOKENS],
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else endoftext,
            "transformers_version": transformers.__version__}


def write_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Put ``tokenizer`` into ``directory``: the files it was loaded from, copied, when they reproduce it;
    otherwise ``save_pretrained``. A tokenizer_config.json ``auto_map`` is qualified by the official repository.

    Raises:
        ValueError: the written tokenizer does not reproduce ``tokenizer``'s vocabulary.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    source = Path(tokenizer.name_or_path) if tokenizer.name_or_path else None
    files = [source / name for name in TOKENIZER_FILES if (source / name).is_file()] if source else []
    for file in files:
        if file.resolve() != (directory / file.name).resolve():
            shutil.copyfile(file, directory / file.name)
    if not files or not _reproduces(directory, tokenizer):
        tokenizer.save_pretrained(directory)  # built in memory, or changed since it was loaded
        if not _reproduces(directory, tokenizer):
            raise ValueError(f"the tokenizer written to {directory} does not reproduce the one given")
    return directory


def _reproduces(directory: Path, tokenizer: PreTrainedTokenizerBase) -> bool:
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if "auto_map" in config:
        config["auto_map"] = remote_code_map(config["auto_map"])
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return load_tokenizer(directory).get_vocab() == tokenizer.get_vocab()


def tokenizer_digest(directory: str | Path) -> str:
    """sha256 over the tokenizer files of ``directory`` (names and bytes): which tokenizer a run used."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (Path(directory) / name).is_file():
            digest.update(name.encode() + b"\0" + (Path(directory) / name).read_bytes() + b"\0")
    return digest.hexdigest()


def write_model_files(directory: str | Path, tokenizer: PreTrainedTokenizerBase, processor: ProcessorConfig) -> None:
    """A model directory's files besides the weights: tokenizer, preprocessor and generation settings."""
    directory = Path(directory)
    write_tokenizer(tokenizer, directory)
    preprocessor = {**processor.preprocessor_config()}
    preprocessor["auto_map"] = remote_code_map(preprocessor["auto_map"])
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n")
    (directory / GENERATION_FILE).write_text(json.dumps(generation_config(tokenizer), indent=2) + "\n")


def export_model_dir(model: MiniCPMV, directory: str | Path, tokenizer: PreTrainedTokenizerBase,
                     processor_config: ProcessorConfig, dtype: torch.dtype = torch.bfloat16,
                     max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write ``model`` with the tokenizer and processor settings it was trained with (see the module docstring).

    Raises:
        ValueError: the model has no official layout, or the tokenizer lacks MiniCPM-V's special tokens
            or has more tokens than the model embeds.
    """
    vocab = model.llm.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}")
    processor = trained_processor_config(processor_config, model)
    config = official_config(model, dtype, max_slice_nums=processor.max_slice_nums,
                             image_size=processor.scale_resolution)
    config.update(bos_token_id=token_id(tokenizer, "<|endoftext|>"), eos_token_id=token_id(tokenizer, "<|im_end|>"))
    directory = export_official(model, directory, dtype, max_shard_bytes, config=config)
    write_model_files(directory, tokenizer, processor)
    return directory
