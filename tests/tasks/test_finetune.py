"""+experiment=finetune end to end: an official-format tiny checkpoint (the toolkit's export) fine-tuned on an
official-format JSONL file, with and without LoRA, and exported again."""

from __future__ import annotations

import json
import os
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from assemblies.chat import Chat
from assemblies.checkpoints.files import read_tensors
from assemblies.presets import compose_config
from assemblies.training.config import missing_inputs, pipeline_stages
from blocks.data.formats import official_corpus

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


def write_jsonl(root: Path, entries: int = 20) -> Path:
    """``entries`` coloured squares with "What colour is this?" and one malformed line."""
    lines = []
    for k in range(entries):
        name = list(COLOURS)[k % 3]
        Image.new("RGB", (120, 90), COLOURS[name]).save(root / f"{k}.png")
        lines.append(json.dumps({"id": str(k), "image": f"{k}.png", "conversations": [
            {"role": "user", "content": "<image>\nWhat colour is this?"},
            {"role": "assistant", "content": f"It is {name}."}]}))
    lines.insert(3, '{"id": "broken", "conversations": [')
    path = root / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def checkpoint_and_data(tiny_chat_checkpoint, tmp_path_factory):
    """The toolkit's export of a tiny model (read only) and a JSONL file beside its images."""
    return tiny_chat_checkpoint, write_jsonl(tmp_path_factory.mktemp("data"))


def _finetune(checkpoint: Path, data: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tasks" / "train.py"), "+assembly=mcpv45", "+experiment=finetune",
               f"checkpoint={checkpoint}", f"data.train={data}", "stages.sft.max_steps=3", "stages.sft.batch_size=8",
               "data.num_workers=0", "pipeline.plots=false", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True,
                          text=True, timeout=900)


def test_the_experiment_takes_everything_from_the_checkpoint(checkpoint_and_data):
    checkpoint, data = checkpoint_and_data
    cfg = compose_config(["+assembly=mcpv45", "+experiment=finetune", f"checkpoint={checkpoint}",
                          f"data.train={data}"])
    config = json.loads((checkpoint / "config.json").read_text())
    assert (cfg.dims.llm_hidden, cfg.dims.queries, cfg.dims.vocab_size) == (64, 16, config["vocab_size"])
    assert cfg.data.tokenizer.directory == str(checkpoint) and cfg.data.processor.checkpoint == str(checkpoint)
    assert [s.name for s in pipeline_stages(cfg)] == ["sft"] and cfg.stages.sft.init_from == str(checkpoint)
    assert missing_inputs(cfg, pipeline_stages(cfg)) == []
    unset = compose_config(["+assembly=mcpv45", "+experiment=finetune"])
    problems = missing_inputs(unset, pipeline_stages(unset))
    assert [p.split("=")[0] for p in problems] == ["set checkpoint", "set data.train"]


def test_a_heldout_split_is_drawn_from_the_training_file(checkpoint_and_data):
    _, data = checkpoint_and_data
    train = official_corpus(data, split="train", seed=3, heldout_fraction=0.1)
    heldout = official_corpus(data, split="heldout", seed=3, heldout_fraction=0.1)
    assert (len(train), len(heldout)) == (19, 2)  # 21 lines: 10% held out
    assert not set(train.indices) & set(heldout.indices)
    assert heldout.indices == official_corpus(data, split="heldout", seed=3, heldout_fraction=0.1).indices


@pytest.mark.slow
@pytest.mark.parametrize("lora", ["off", "on"])
def test_finetune_trains_and_exports_a_self_contained_model(checkpoint_and_data, tmp_path, lora):
    checkpoint, data = checkpoint_and_data
    done = _finetune(checkpoint, data, tmp_path, f"lora={lora}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sft" / "result.json").read_text())
    assert result["steps"] == 3 and set(result["tasks"]) == {"finetune"}
    assert result["tasks"]["finetune"]["acc"] is not None  # evaluated on the held-out split

    export = tmp_path / "export"
    chat = Chat.from_checkpoint(export)  # tokenizer, processor settings and stop ids from the export alone
    original = Chat.from_checkpoint(checkpoint)
    assert chat.tokenizer.get_vocab() == original.tokenizer.get_vocab()
    assert replace(chat.processor_config, tokens_per_group=0) == replace(original.processor_config, tokens_per_group=0)
    before, after = read_tensors(checkpoint), read_tensors(export)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(n.startswith("resampler.") for n in changed) and any(n.startswith("vpm.") for n in changed)
    attention = {n for n in changed if n.startswith("llm.") and "self_attn" in n and "norm" not in n}
    other_llm = {n for n in changed if n.startswith("llm.")} - attention
    assert attention  # full fine-tuning, or LoRA adapters merged into the attention projections
    assert bool(other_llm) == (lora == "off")  # LoRA leaves every other LLM weight as it was
