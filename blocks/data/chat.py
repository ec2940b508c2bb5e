"""Qwen3 chat format (MiniCPM-V 4.5's chat template) with the character spans that carry loss.

``render_chat`` produces exactly the text of the official Jinja template (``QWEN3_CHAT_TEMPLATE``,
verbatim from the released ``tokenizer_config.json``; tools are not supported) and, alongside it, the
spans of assistant text a model is trained to produce. Label rule, following the official fine-tuning
``dataset.py`` (``conversation_to_ids_qwen2``): every assistant turn is a target from the first token
after ``<|im_start|>assistant\\n`` through its closing ``<|im_end|>`` inclusive (so the model learns to
stop); the newline after ``<|im_end|>``, all system/user text and the headers are not. In the last
turn the template always writes a think block; when it is the empty scaffold
``<think>\\n\\n</think>\\n\\n`` (a non-thinking answer) the scaffold is excluded, as officially; a real
``<think>reasoning</think>`` block is trained on. Reasoning is read from ``reasoning_content`` or from
a ``<think>...</think>`` prefix of the content, and dropped from turns before the last user query.

Labels here are unshifted (label[i] = input_ids[i] on targets; the model shifts). The official code
pre-shifts its targets and, at the end of each assistant turn, also trains the ``<|im_end|>``
position to predict ``<|im_end|>`` again; that artefact is deliberately not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
EMPTY_THINK = "<think>\n\n</think>\n\n"
ROLES = ("system", "user", "assistant")

QWEN3_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
    {%- if enable_thinking is defined and enable_thinking is true %}
        {{- '<think>\n' }}
    {%- endif %}
{%- endif %}"""


@dataclass
class RenderedChat:
    """The chat text and the [start, end) character spans that are prediction targets."""

    text: str
    target_spans: list[tuple[int, int]] = field(default_factory=list)


def split_reasoning(message: Mapping[str, str]) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message, as the template derives them."""
    content = message.get("content") or ""
    if message.get("reasoning_content") is not None:
        return message["reasoning_content"], content
    if THINK_CLOSE in content:
        reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
        return reasoning, content.split(THINK_CLOSE)[-1].lstrip("\n")
    return "", content


def _last_query_index(messages: Sequence[Mapping[str, str]]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index].get("content") or ""
        if messages[index]["role"] == "user" and not (content.startswith("<tool_response>")
                                                       and content.endswith("</tool_response>")):
            return index
    return len(messages) - 1


def render_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False,
                enable_thinking: bool | None = None) -> RenderedChat:
    """Render ``messages`` ({role, content[, reasoning_content]}) like the official template.

    Args:
        add_generation_prompt: end with an open assistant turn (inference).
        enable_thinking: with a generation prompt, False appends the empty think block (answer
            directly), True opens ``<think>\\n``, None adds neither (the template's "undefined").

    Raises:
        ValueError: an empty conversation or a role other than system/user/assistant.
    """
    if not messages:
        raise ValueError("empty conversation")
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0

    def emit(text: str) -> int:
        nonlocal length
        parts.append(text)
        length += len(text)
        return length

    last_query = _last_query_index(messages)
    for index, message in enumerate(messages):
        role = message["role"]
        if role not in ROLES:
            raise ValueError(f"message {index}: role {role!r} is not one of {ROLES}")
        if role != "assistant":
            emit(f"{IM_START}{role}\n{message.get('content') or ''}{IM_END}\n")
            continue
        start = emit(f"{IM_START}assistant\n")
        reasoning, answer = split_reasoning(message)
        is_last = index == len(messages) - 1
        if index > last_query and (is_last or reasoning):
            body = f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{answer.lstrip(chr(10))}"
            if body.startswith(EMPTY_THINK):
                start += len(EMPTY_THINK)  # the non-thinking scaffold is given, not learned
        else:
            body = answer
        emit(body)
        spans.append((start, emit(IM_END)))
        emit("\n")
    if add_generation_prompt:
        emit(f"{IM_START}assistant\n")
        if enable_thinking is False:
            emit(EMPTY_THINK)
        elif enable_thinking is True:
            emit(f"{THINK_OPEN}\n")
    return RenderedChat("".join(parts), spans)
