"""Chat rendering equals the official Jinja template; training labels follow the official rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from blocks.data.chat import EMPTY_THINK, render_chat, split_reasoning
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.record import Record
from blocks.data.tokenizer import load_tokenizer, tiny_tokenizer

CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hi there"}],
    "system_qa": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"},
                  {"role": "assistant", "content": "A."}],
    "history_reasoning_stripped": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nfirst"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "second", "reasoning_content": "r2"}],
    "think_in_content": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "<think>\nstep 1\nstep 2\n</think>\n\n\nanswer"}],
    "late_system_and_two_answers": [
        {"role": "system", "content": "s1"}, {"role": "user", "content": "u"}, {"role": "system", "content": "s2"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "plain"},
        {"role": "assistant", "content": "<think>why</think>last"}],
    "ends_with_user": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = ["What digit is this?", "It is 7.", "a red square", "first second answer plain"] * 30
    return tiny_tokenizer(texts, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("thinking", [None, False, True])
def test_render_equals_official_template(tiny, name, thinking):
    messages = CONVERSATIONS[name]
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    for generation in (False, True):
        expected = tiny.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation, **kwargs)
        assert render_chat(messages, generation, thinking).text == expected


def test_target_spans():
    chat = render_chat(CONVERSATIONS["history_reasoning_stripped"])
    assert [chat.text[s:e] for s, e in chat.target_spans] == ["first<|im_end|>",
                                                              "<think>\nr2\n</think>\n\nsecond<|im_end|>"]
    chat = render_chat(CONVERSATIONS["system_qa"])
    assert EMPTY_THINK in chat.text  # the template writes the scaffold, ...
    assert [chat.text[s:e] for s, e in chat.target_spans] == ["A.<|im_end|>"]  # ... it is not a target
    assert render_chat(CONVERSATIONS["ends_with_user"], True, False).text.endswith(f"assistant\n{EMPTY_THINK}")
    assert split_reasoning({"content": "<think>a</think>\nb"}) == ("a", "b")
    with pytest.raises(ValueError, match="role 'tool'"):
        render_chat([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="empty"):
        render_chat([])


def official_labels(ids: list[int], tokenizer, text: str) -> list[int]:
    """The official finetune rule (dataset.py conversation_to_ids_qwen2 + think offset), unshifted."""
    ids_a = np.array(ids)
    convert = tokenizer.convert_tokens_to_ids
    context = np.ones(len(ids), dtype=bool)
    assistants = [i for i in np.where(ids_a == convert("assistant"))[0]
                  if i > 0 and ids_a[i - 1] == convert("<|im_start|>")]
    ends = np.where(ids_a == convert("<|im_end|>"))[0]
    for n, idx in enumerate(assistants):
        start = idx + 2 + (4 if n == len(assistants) - 1 and EMPTY_THINK in text else 0)
        end = ends[ends > start][0]
        context[start:end + 1] = False
    return np.where(context, -100, ids_a).tolist()


@pytest.mark.parametrize("name", ["system_qa", "history_reasoning_stripped", "think_in_content"])
def test_labels_follow_official_rule(reference_dir, name):
    tokenizer = load_tokenizer(reference_dir)
    messages = [dict(m) for m in CONVERSATIONS[name]]
    messages[-2] = {**messages[-2], "content": "<image>\n" + messages[-2]["content"]}
    record = Record(id=name, conversations=messages, images=[Image.new("RGB", (60, 40), (9, 9, 9))])
    sample = MiniCPMVProcessor(tokenizer, ProcessorConfig())(record)
    text = tokenizer.decode(sample.input_ids)
    assert sample.labels.tolist() == official_labels(sample.input_ids.tolist(), tokenizer, text)


def test_labels_text_and_visual_tokens_in_assistant_turns(tiny):
    record = Record(id="r", images=[Image.new("RGB", (30, 30)), Image.new("RGB", (30, 30))], conversations=[
        {"role": "user", "content": "<image>What digit is this?"},
        {"role": "assistant", "content": "It is 7. Here: <image>"},
        {"role": "user", "content": "And?"}, {"role": "assistant", "content": "a red square"}])
    sample = MiniCPMVProcessor(tiny, ProcessorConfig(tokens_per_group=4))(record)
    labelled = sample.labels != -100
    edges = torch.diff(labelled.int(), prepend=torch.zeros(1, dtype=torch.int), append=torch.zeros(1, dtype=torch.int))
    starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
    texts = [tiny.decode(sample.input_ids[s:e]) for s, e in zip(starts, ends)]
    # the image inside an answer is input, not a target: the answer's labels stop before it
    assert texts == ["It is 7. Here: ", "<|im_end|>", "a red square<|im_end|>"]
    assert torch.equal(sample.labels[labelled], sample.input_ids[labelled])
    assert sample.image_bound.tolist()[1][1] - sample.image_bound.tolist()[1][0] == 4
