"""ProcessorConfig from a checkpoint's preprocessor_config.json + config.json, and back."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from blocks.data.processor import MiniCPMVProcessor
from blocks.data.processor_config import ProcessorConfig
from blocks.data.record import Record, VideoClip
from blocks.data.tokenizer import tiny_tokenizer


def test_reads_the_official_checkpoint(reference_dir):
    config = ProcessorConfig.from_checkpoint(reference_dir)
    assert config == ProcessorConfig(max_slice_nums=9, scale_resolution=448, patch_size=14, use_image_id=True,
                                     tokens_per_group=64)
    assert ProcessorConfig.from_checkpoint(reference_dir, max_slice_nums=1).max_slice_nums == 1
    official = json.loads((reference_dir / "preprocessor_config.json").read_text())
    assert config.preprocessor_config() == official  # the inverse, field for field


def test_tiny_settings_round_trip(tmp_path):
    config = ProcessorConfig(max_slice_nums=1, scale_resolution=112, use_image_id=False, tokens_per_group=16)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config.preprocessor_config()))
    (tmp_path / "config.json").write_text(json.dumps({"query_num": 16, "patch_size": 14, "image_size": 448,
                                                      "slice_config": {"max_slice_nums": 1}}))
    assert ProcessorConfig.from_checkpoint(tmp_path) == config


def edited_copy(reference_dir, tmp_path, name: str, **fields):
    for file in ("config.json", "preprocessor_config.json"):
        shutil.copy(reference_dir / file, tmp_path / file)
    data = json.loads((tmp_path / name).read_text())
    (tmp_path / name).write_text(json.dumps({**data, **fields}))
    return tmp_path


@pytest.mark.parametrize("name, fields, error, match", [
    ("config.json", {"query_num": 32}, ValueError, "image_feature_size=64 but query_num=32"),
    ("config.json", {"patch_size": 16}, ValueError, "patch_size=14 but patch_size=16"),
    ("preprocessor_config.json", {"slice_mode": False}, ValueError, "slice_mode=false"),
    ("preprocessor_config.json", {"unk": "<pad>"}, ValueError, "unk='<pad>'"),
    ("preprocessor_config.json", {"norm_mean": [0.48, 0.45, 0.4]}, ValueError, "norm_mean"),
])
def test_disagreements_that_break_the_model_are_errors(reference_dir, tmp_path, name, fields, error, match):
    with pytest.raises(error, match=match):
        ProcessorConfig.from_checkpoint(edited_copy(reference_dir, tmp_path, name, **fields))


def test_missing_files_are_named(reference_dir, tmp_path, caplog):
    shutil.copy(reference_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json is missing"):
        ProcessorConfig.from_checkpoint(tmp_path)
    edited = edited_copy(reference_dir, tmp_path, "preprocessor_config.json", max_slice_nums=4)
    assert ProcessorConfig.from_checkpoint(edited).max_slice_nums == 4  # the processor's file wins, logged
    assert "max_slice_nums 4 in preprocessor_config.json, 9 in config.json" in caplog.text


def test_video_image_ids_count_every_image_and_frame(tmp_path):
    tok = tiny_tokenizer(["Compare the picture and the clip."] * 20, vocab_size=300, cache_dir=tmp_path)
    frames = [Image.new("RGB", (28, 28))] * 5
    record = Record(id="r", conversations=[{"role": "user", "content": "<image><video><image>Compare."}],
                    images=[Image.new("RGB", (28, 28))] * 2, videos=[VideoClip(frames, [[0, 1], [2, 3], [4]])])
    config = ProcessorConfig(max_slice_nums=1, scale_resolution=28, tokens_per_group=2)

    def ids(**changes) -> list[str]:
        text = tok.decode(MiniCPMVProcessor(tok, ProcessorConfig(**{**config.__dict__, **changes}))(
            record, mode="inference").input_ids)
        return [part.split("</image_id>")[0] for part in text.split("<image_id>")[1:]]

    assert ids() == ["0", "1"]  # images among images; frame groups unnamed (model card)
    assert ids(video_image_id=True) == ["0", "1", "3", "5", "6"]  # official: image 0, frames 1-5, image 6
    assert ids(use_image_id=False) == []
