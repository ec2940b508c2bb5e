"""A self-contained export: weights + tokenizer + processor/generation settings, reloaded from the directory alone."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from assemblies.chat import Chat
from assemblies.checkpoints.model_dir import export_model_dir, write_model_files
from assemblies.checkpoints.official import OFFICIAL_REPO, official_config
from assemblies.presets import mcpv45, mcpv45_tiny
from assemblies.training.run_tokenizer import pin_tokenizer
from blocks.batch import collate
from blocks.data.processor import MiniCPMVProcessor
from blocks.data.processor_config import ProcessorConfig
from blocks.data.record import Record
from blocks.data.tokenizer import load_tokenizer, tiny_tokenizer

TEXTS = ["How many shapes are there?", "There are 3 shapes.", "Which way does the circle move?", "Down."] * 20
TINY = ProcessorConfig(max_slice_nums=1, scale_resolution=112, use_image_id=False)


def _record() -> Record:
    image = Image.new("RGB", (150, 100), (200, 40, 40))
    return Record(id="r", images=[image], conversations=[{"role": "user", "content": "<image>\nHow many shapes?"},
                                                         {"role": "assistant", "content": "There are 3 shapes."}])


def _logits(model, tokenizer, config: ProcessorConfig) -> torch.Tensor:
    processor = MiniCPMVProcessor(tokenizer, config)
    batch = collate([processor(_record(), mode="train")], tokenizer.pad_token_id)
    with torch.no_grad():
        return model.eval()(batch).logits


@pytest.fixture(scope="module")
def tiny_tokenizer_320(tmp_path_factory):
    return tiny_tokenizer(TEXTS, vocab_size=320, cache_dir=tmp_path_factory.mktemp("tokenizers"))


def test_an_export_reloads_from_its_directory_alone_with_the_same_logits(tmp_path, tiny_tokenizer_320):
    torch.manual_seed(0)
    model = mcpv45_tiny()
    export_model_dir(model, tmp_path, tiny_tokenizer_320, TINY, dtype=torch.float32)

    chat = Chat.from_checkpoint(tmp_path)  # weights, tokenizer, processor settings and stop ids: no other argument
    assert chat.tokenizer.get_vocab() == tiny_tokenizer_320.get_vocab()
    assert (chat.processor_config.scale_resolution, chat.processor_config.max_slice_nums) == (112, 1)
    assert chat.processor_config.use_image_id is False
    expected = _logits(model, tiny_tokenizer_320, replace(TINY, tokens_per_group=16))
    torch.testing.assert_close(_logits(chat.model, chat.tokenizer, chat.processor_config), expected, rtol=0, atol=0)

    ids = tiny_tokenizer_320.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert chat.token_ids["stop_token_ids"] == tuple(ids)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["image_size"], config["slice_config"]["max_slice_nums"], config["query_num"]) == (112, 1, 16)
    assert (config["bos_token_id"], config["eos_token_id"]) == (ids[1], ids[0])
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == ids and generation["pad_token_id"] == tiny_tokenizer_320.pad_token_id
    preprocessor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert (preprocessor["scale_resolution"], preprocessor["max_slice_nums"], preprocessor["image_feature_size"],
            preprocessor["use_image_id"]) == (112, 1, 16, False)
    for auto_map in (config["auto_map"], preprocessor["auto_map"]):
        assert all(ref.startswith(f"{OFFICIAL_REPO}--") for ref in auto_map.values())


def test_at_full_size_the_files_mirror_the_release(reference_dir, tmp_path):
    """The export's non-weight files, from the official tokenizer and settings, equal the released ones except
    that auto_map names the official repository (the export holds no code) and the transformers version."""
    tokenizer = load_tokenizer(reference_dir)
    write_model_files(tmp_path, tokenizer, ProcessorConfig.from_checkpoint(reference_dir))
    for name in ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_bytes() == (reference_dir / name).read_bytes(), name

    def read(directory, name):
        return json.loads((directory / name).read_text())

    for name, differing in (("preprocessor_config.json", {"auto_map"}), ("tokenizer_config.json", {"auto_map"}),
                            ("generation_config.json", {"transformers_version"})):
        ours, theirs = read(tmp_path, name), read(reference_dir, name)
        assert set(ours) == set(theirs), name
        assert {key for key in theirs if ours[key] != theirs[key]} == differing, name
    qualified = read(tmp_path, "tokenizer_config.json")["auto_map"]["AutoTokenizer"]
    assert qualified == [f"{OFFICIAL_REPO}--tokenization_minicpmv_fast.MiniCPMVTokenizerFast", None]

    reference = read(reference_dir, "config.json")
    config = official_config(mcpv45())
    assert config["auto_map"] == {key: f"{OFFICIAL_REPO}--{ref}" for key, ref in reference["auto_map"].items()}


def test_a_run_keeps_the_tokenizer_it_started_with(tmp_path, tiny_tokenizer_320):
    pinned = pin_tokenizer(tiny_tokenizer_320, tmp_path / "tokenizer")
    assert pinned.get_vocab() == tiny_tokenizer_320.get_vocab()
    other = tiny_tokenizer(["a different corpus entirely"] * 50, vocab_size=300, cache_dir=tmp_path / "cache")
    resumed = pin_tokenizer(other, tmp_path / "tokenizer")  # the corpus changed between two starts of the run
    assert resumed.get_vocab() == tiny_tokenizer_320.get_vocab() != other.get_vocab()
