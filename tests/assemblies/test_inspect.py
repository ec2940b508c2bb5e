"""tasks/inspect.py and assemblies/memory.py: parameter table and per-stage training memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from assemblies.memory import PAPER_STAGES, Stage, format_report, inspect_model, lora_params, stage_memory
from assemblies.presets import REPO_ROOT, compose_config, mcpv45

FULL = 8_695_895_280
VISION, RESAMPLER, LLM = 417_792_240, 88_907_776, 8_189_195_264


def write_stages(directory, **stages: str) -> None:
    directory.mkdir(exist_ok=True)
    for name, body in stages.items():
        (directory / f"{name}.yaml").write_text(body)


def test_full_model_memory_per_stage(tmp_path):
    write_stages(tmp_path, a="name: warmup\ntrainable: [resampler]\n",
                 b="# @package stage\nname: all\ntrainable: [vpm, resampler, llm]\n",
                 c="name: lora\ntrainable: [resampler]\nlora: {r: 64, alpha: 64}\n",
                 notes="just: a helper file\n")
    report = inspect_model(compose_config(["+assembly=mcpv45", f"stage_dir={tmp_path}", "gpus=[1,8]"]))
    assert report["params"]["total"] == {"total": FULL, "trainable": FULL}
    assert {k: v["total"] for k, v in report["params"].items()} == {"vpm": VISION, "resampler": RESAMPLER,
                                                                      "llm": LLM, "total": FULL}
    warmup, everything, lora = report["stages"]
    # bf16 weights (2 B each) + per trainable param: bf16 grad 2 B + fp32 master 4 B + AdamW 8 B
    assert warmup["total"] == 2 * FULL + 14 * RESAMPLER
    assert everything["total"] == 16 * FULL == 139_134_324_480
    assert everything["per_gpu"][8] == 16 * FULL / 8  # FSDP full shard: ~16.2 GiB per GPU on 8
    # LoRA r=64 on q/k/v/o of the 36 Qwen3-8B layers: 64 * ((4096+4096)*2 + (4096+1024)*2) per layer
    assert lora["lora_params"] == 36 * 64 * (2 * 8192 + 2 * 5120) == 61_341_696
    assert lora["trainable_params"] == RESAMPLER + 61_341_696
    assert report["skipped_stage_files"] == ["notes.yaml"]


def test_precision_changes_the_bytes_per_parameter():
    model = mcpv45()
    stage = Stage("all", ["vpm", "resampler", "llm"])
    assert stage_memory(model, stage, "32-true", [1])["total"] == 16 * FULL  # 4 + 4 + 8, no master copy
    assert stage_memory(model, stage, "bf16-true", [1])["total"] == 12 * FULL
    with pytest.raises(ValueError, match="precision 'fp8' not modelled"):
        stage_memory(model, stage, "fp8", [1])


def test_lora_counts_only_the_targeted_linears():
    llm = mcpv45().llm
    assert lora_params(llm, 8, ("q_proj",)) == 36 * 8 * (4096 + 4096)
    assert lora_params(llm, 8, ("nothing",)) == 0


def test_paper_stages_when_there_are_no_stage_files(tmp_path):
    report = inspect_model(compose_config(["+assembly=mcpv45", "scale=tiny", f"stage_dir={tmp_path}"]))
    assert [s["name"] for s in report["stages"]] == [s.name for s in PAPER_STAGES]


def test_a_stage_with_an_unknown_block_names_its_file(tmp_path):
    write_stages(tmp_path, bad="name: bad\ntrainable: [vision_tower]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: trainable lists unknown blocks \['vision_tower'\]"):
        inspect_model(compose_config(["+assembly=mcpv45", "scale=tiny", f"stage_dir={tmp_path}"]))


def test_any_override_inspects(tmp_path):
    cfg = compose_config(["+assembly=mcpv45", "scale=tiny", "resampler=mlp", f"stage_dir={tmp_path}", "gpus=[2]"])
    report = inspect_model(cfg)
    assert report["params"]["resampler"]["total"] == 64 * 64 + 64 + 64 * 64 + 64  # two linears 64 -> 64
    text = format_report(report)
    assert "/GPU N=2" in text and "MiB" in text and f"{report['params']['total']['total']:,}" in text


def test_the_task_prints_the_documented_numbers(tmp_path):
    run = subprocess.run([sys.executable, str(REPO_ROOT / "tasks" / "inspect.py"), "+assembly=mcpv45",
                          f"stage_dir={tmp_path}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for number in ("417,792,240", "88,907,776", "8,189,195,264", "8,695,895,280"):
        assert number in run.stdout
    row = next(line for line in run.stdout.splitlines() if line.startswith("pretrain_3_end_to_end"))
    assert row.split()[-3:] == ["129.6", "129.6", "16.2"]  # total GiB, per GPU on 1 and on 8
    assert list(tmp_path.iterdir()) == []  # a read-only report writes no files
