"""tasks/chat.py and its terminal front end (assemblies/chat_terminal.py) on a random tiny checkpoint."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from assemblies.chat import Chat
from assemblies.chat_terminal import interactive, load_chat, one_shot

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "red.png"
    Image.new("RGB", (112, 112), (200, 20, 20)).save(path)
    return path


def run_task(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "tasks" / "chat.py"), *args], input=stdin, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_one_shot_prints_the_streamed_reply(tiny_chat_checkpoint, picture):
    result = run_task(f"checkpoint={tiny_chat_checkpoint}", "prompt=How many shapes are there?", f"image={picture}",
                      "thinking=true", "thinking_budget=3", "sampling=false", "max_new_tokens=10")
    assert result.returncode == 0, result.stderr
    expected = Chat.from_checkpoint(tiny_chat_checkpoint).chat(
        [{"role": "user", "content": [picture, "How many shapes are there?"]}], enable_thinking=True,
        thinking_budget=3, sampling=False, max_new_tokens=10)
    assert result.stdout == f"<think>\n{expected.text}\n"
    assert f"[{expected.finish_reason}: {expected.prompt_tokens} prompt + 10 generated tokens]" in result.stderr


@pytest.mark.slow
def test_interactive_loop_reads_piped_input(tiny_chat_checkpoint, picture):
    lines = f"/think\nHow many shapes?\n/image {picture}\nWhat colour is it?\n/exit\n"
    result = run_task(f"checkpoint={tiny_chat_checkpoint}", "max_new_tokens=4", "generation.seed=1", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert "thinking: on" in result.stdout and "attached red.png" in result.stdout
    assert result.stdout.count("<think>\n") == 2 and result.stderr.count("generated tokens]") == 2


def test_a_toolkit_export_needs_its_missing_pieces_on_the_command_line(tiny_chat_checkpoint, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(tiny_chat_checkpoint, export)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
                 "generation_config.json"):
        (export / name).unlink()
    with pytest.raises(SystemExit, match="(?s)no tokenizer.*tokenizer=<dir>"):
        load_chat(export)
    with pytest.raises(SystemExit, match="(?s)preprocessor_config.json.*processor.scale_resolution=112"):
        load_chat(export, tokenizer=str(tiny_chat_checkpoint))
    chat = load_chat(export, tokenizer=str(tiny_chat_checkpoint), processor={"scale_resolution": 112,
                     "max_slice_nums": 1, "patch_size": None}, stop_tokens=["<|im_end|>", "<|endoftext|>"])
    complete = Chat.from_checkpoint(tiny_chat_checkpoint)
    assert chat.processor_config.scale_resolution == 112 and chat.token_ids == complete.token_ids


def test_interactive_keeps_the_conversation(tiny_chat_checkpoint, picture):
    chat = Chat.from_checkpoint(tiny_chat_checkpoint)
    out, err = io.StringIO(), io.StringIO()
    lines = io.StringIO(f"/image {picture}\nHow many shapes?\n/image /no/such.png\nAnd now?\n/reset\nHi\n")
    messages = interactive(chat, options={"sampling": False, "max_new_tokens": 3}, lines=lines, out=out, err=err)
    assert "no such file: /no/such.png" in err.getvalue() and "new conversation" in out.getvalue()
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == ["Hi"]
    first = chat.chat([{"role": "user", "content": [picture, "How many shapes?"]}], sampling=False, max_new_tokens=3)
    assert first.text in out.getvalue()
    single = io.StringIO()
    one_shot(chat, "How many shapes?", images=[str(picture)], options={"sampling": False, "max_new_tokens": 3},
             out=single, err=io.StringIO())
    assert single.getvalue() == first.text + "\n"
