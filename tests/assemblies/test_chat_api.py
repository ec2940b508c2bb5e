"""The Chat API on a random tiny checkpoint in the official layout (tests/conftest.py writes it)."""

from __future__ import annotations

import shutil
from dataclasses import fields

import pytest
import torch
from PIL import Image

from assemblies.chat import GENERATION_KEYWORDS, Chat
from blocks.batch import collate
from blocks.data.processor import MiniCPMVProcessor
from blocks.data.record import VideoClip


@pytest.fixture(scope="module")
def chat(tiny_chat_checkpoint) -> Chat:
    return Chat.from_checkpoint(tiny_chat_checkpoint)


def picture(value: int = 200) -> Image.Image:
    return Image.new("RGB", (120, 90), (value, 30, 60))


def ask(*content) -> list[dict]:
    return [{"role": "user", "content": list(content)}]


class Capture:
    """Replaces ``model.generate`` to record what chat() asks of it (then generates as usual)."""

    def __init__(self, model) -> None:
        self.model, self.original, self.calls = model, model.generate, []

    def __enter__(self):
        def record(batch, config, **kwargs):
            self.calls.append((batch, config))
            return self.original(batch, config, **kwargs)
        self.model.generate = record
        return self

    def __exit__(self, *exc) -> None:
        del self.model.generate  # back to the class method


def test_reads_everything_from_the_checkpoint(chat, tiny_chat_checkpoint):
    assert chat.processor_config.scale_resolution == 112 and chat.processor_config.max_slice_nums == 1
    assert chat.tokenizer.convert_ids_to_tokens(list(chat.token_ids["stop_token_ids"])) == ["<|im_end|>",
                                                                                          "<|endoftext|>"]
    reply = chat.chat(ask(picture(), "How many shapes are there?"), max_new_tokens=6, sampling=False)
    assert reply.finish_reason in ("stop", "length") and reply.generated_tokens <= 6
    assert reply.reasoning is None and reply.answer == reply.text.strip() and reply.prompt_tokens > 16


@pytest.mark.parametrize("missing, argument", [("tokenizer.json", "tokenizer="),
                                               ("preprocessor_config.json", "processor_config="),
                                               ("generation_config.json", "stop_token_ids=")])
def test_a_missing_file_is_named_with_what_to_pass(tiny_chat_checkpoint, tmp_path, missing, argument):
    shutil.copytree(tiny_chat_checkpoint, tmp_path / "ckpt")
    (tmp_path / "ckpt" / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing.split('.')[0]}.*{argument}"):
        Chat.from_checkpoint(tmp_path / "ckpt")


def test_every_keyword_takes_effect_and_unknown_ones_are_errors(chat):
    with Capture(chat.model) as capture:
        chat.chat(ask("Hi"), max_new_tokens=3, temperature=0.3, top_p=0.5, top_k=7, repetition_penalty=1.1,
                  min_new_tokens=2, seed=4, return_logprobs=True, stop_token_ids=[5])
        chat.chat(ask("Hi"), max_new_tokens=3)
        chat.chat(ask("Hi"), max_new_tokens=3, sampling=False)
    given, official, greedy = [config for _, config in capture.calls]
    assert (given.temperature, given.top_p, given.top_k, given.repetition_penalty, given.min_new_tokens, given.seed,
            given.return_logprobs, given.stop_token_ids, given.max_new_tokens) == \
        (0.3, 0.5, 7, 1.1, 2, 4, True, (5,), 3)
    assert (official.do_sample, official.temperature, official.top_p, official.top_k,
            official.repetition_penalty) == (True, 0.7, 0.8, 100, 1.03)
    assert (greedy.do_sample, greedy.repetition_penalty) == (False, 1.2)
    assert set(GENERATION_KEYWORDS) <= {f.name for f in fields(type(given))}
    with pytest.raises(TypeError, match="beam search is not implemented"):
        chat.chat(ask("Hi"), num_beams=3)
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['topp'\]"):
        chat.chat(ask("Hi"), topp=0.9)
    with pytest.raises(ValueError, match="only with sampling=True"):
        chat.chat(ask("Hi"), sampling=False, top_p=0.9)
    with pytest.raises(ValueError, match="needs enable_thinking=True"):
        chat.chat(ask("Hi"), thinking_budget=5)


def test_streamed_pieces_join_to_the_reply(chat):
    messages = ask(picture(), "Which way does the circle move?")
    stream = chat.chat(messages, stream=True, max_new_tokens=24, seed=2)
    pieces = list(stream)
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == stream.response.text == chat.chat(messages, max_new_tokens=24, seed=2).text
    with pytest.raises(ValueError, match="one reply"):
        chat.chat([messages, messages], stream=True)


def test_thinking_budget_cuts_the_reasoning(chat):
    with Capture(chat.model) as capture:
        reply = chat.chat(ask("How many shapes are there?"), enable_thinking=True, thinking_budget=4,
                          max_new_tokens=12, sampling=False)
    prompt = chat.tokenizer.decode(capture.calls[0][0].input_ids[0])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert reply.completion.budget_cut_at == 4 and reply.completion.token_ids[4] == chat.token_ids["think_close_id"]
    assert reply.reasoning == chat.tokenizer.decode(reply.completion.token_ids[:4], skip_special_tokens=True).strip()
    assert reply.finish_reason in ("budget", "length")


def test_batch_equals_one_by_one_and_samples_share_the_visual_tokens(chat):
    conversations = [ask(picture(10), "How many shapes are there?"), ask("Which way does the circle move?"),
                     ask(picture(250), picture(90), "Compare.")]
    batched = chat.chat(conversations, max_new_tokens=8, sampling=False)
    alone = [chat.chat(c, max_new_tokens=8, sampling=False) for c in conversations]
    assert [r.completion.token_ids for r in batched] == [r.completion.token_ids for r in alone]
    calls = []
    hook = chat.model.vpm.register_forward_hook(lambda *args: calls.append(1))
    try:
        samples = chat.chat(conversations[0], max_new_tokens=5, num_samples=4, seed=0)
    finally:
        hook.remove()
    assert len(samples) == 4 and len(calls) == 1  # one vision pass for the 4 samples


def test_multi_turn_drops_earlier_reasoning(chat):
    messages = [{"role": "user", "content": [picture(), "How many shapes are there?"]},
                {"role": "assistant", "content": "<think>\nI count them one by one.\n</think>\n\nThere are 3 shapes."},
                {"role": "user", "content": ["Which way does the circle move?"]}]
    with Capture(chat.model) as capture:
        chat.chat(messages, max_new_tokens=2)
    prompt = chat.tokenizer.decode(capture.calls[0][0].input_ids[0])
    assert "one by one" not in prompt and "<|im_start|>assistant\nThere are 3 shapes.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_video_forms_and_image_ids(chat):
    frames = [picture(v) for v in (0, 60, 120, 180)]
    groups = [[0, 5], [10, 15]]
    with Capture(chat.model) as capture:
        chat.chat(ask(VideoClip(frames, groups), "Which way does the circle move?"), max_new_tokens=2)
        chat.chat(ask(*frames, "Which way does the circle move?"), temporal_ids=groups, max_new_tokens=2)
        chat.chat(ask(VideoClip(frames, groups), "Which way?"), max_new_tokens=2, use_image_id=True)
    clip, official, named = [batch for batch, _ in capture.calls]
    assert torch.equal(clip.input_ids, official.input_ids) and clip.group_sizes.tolist() == [2, 2]
    assert torch.equal(clip.temporal_ids, torch.tensor([0, 5, 10, 15]))
    assert "<image_id>" not in chat.tokenizer.decode(clip.input_ids[0])  # model card: frames unnamed
    text = chat.tokenizer.decode(named.input_ids[0])
    assert "<image_id>0</image_id><image>" in text and "<image_id>2</image_id><image>" in text


def test_inference_batches_carry_no_labels_and_compute_no_loss(chat):
    from blocks.data.messages import record_from_messages
    processor = MiniCPMVProcessor(chat.tokenizer, chat.processor_config)
    batch = collate([processor(record_from_messages(ask(picture(), "Hi")), mode="inference")],
                    chat.tokenizer.pad_token_id, padding_side="left")
    assert batch.labels is None
    with torch.no_grad():
        out = chat.model(batch)
    assert out.loss is None and out.num_loss_tokens == 0
