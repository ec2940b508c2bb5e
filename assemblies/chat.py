"""Chat with a MiniCPM-V checkpoint: the official ``model.chat(msgs, ...)`` over this toolkit's blocks.

    chat = Chat.from_checkpoint("MiniCPM-V-4_5/")   # weights, tokenizer, processor settings, stop ids
    reply = chat.chat([{"role": "user", "content": [image, "What is in the image?"]}])
    reply.answer, reply.reasoning, reply.finish_reason, reply.prompt_tokens, reply.generated_tokens
    for piece in chat.chat(msgs, stream=True): print(piece, end="")
    chat.chat(msgs, enable_thinking=True, thinking_budget=256)     # at most 256 reasoning tokens

Messages are the official format (``blocks.data.messages``): images, videos (``VideoClip``, a path
sampled by ``blocks.data.video``'s model-card rule, or frames + ``temporal_ids``), text. Generation
runs on ``blocks.generation`` (KV-cached; the stop ids always end a row; visual placeholder ids are
never generated).

Defaults, as the official ``chat()`` (HF ``modeling_minicpmv.py``; the same in both modes):
``sampling=True`` -> temperature 0.7, top_p 0.8, top_k 100, repetition_penalty 1.03;
``max_new_tokens=2048``; a system prompt only through ``system_prompt``. ``generation_config.json``
supplies the stop ids only (its sampling fields are ignored, by the official chat too).

Deviations from the official ``chat()``, on purpose:
- Every keyword takes effect or is an error: the official ``**kwargs`` only override keys already in
  its defaults (``top_p`` with ``sampling=False``, or any unknown name, is silently ignored).
- ``sampling=False`` is greedy search with repetition_penalty 1.2; the official uses 3 beams with 1.2
  (beam search is not implemented). Pass ``repetition_penalty=1.0`` for plain argmax decoding.
- Video frames are never sliced and, unless ``use_image_id`` is passed explicitly, carry no
  ``<image_id>``: the model card's video settings (``max_slice_nums=1, use_image_id=False``). With an
  explicit ``use_image_id`` frames are named as the official processor names them.
- ``max_inp_length`` (default: none) lowers ``max_slice_nums`` and then drops video frame groups;
  the official one cuts the token sequence, which can cut a placeholder.
- The answer and the reasoning come back separately; the official returns ``"<think>\\n" + text``.
  Streams yield the generated text only (no leading ``<think>\\n``), and work with greedy decoding.
- No ``vision_hidden_states`` reuse across turns; each call encodes its images again.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from transformers import PreTrainedTokenizerBase, TextIteratorStreamer

from assemblies.checkpoints.official import load_official
from assemblies.mllm import MiniCPMV
from blocks.answers import parse_completion
from blocks.batch import collate
from blocks.data.messages import record_from_messages
from blocks.data.processor import MiniCPMVProcessor
from blocks.data.processor_config import PREPROCESSOR_FILE, ProcessorConfig
from blocks.data.tokenizer import load_tokenizer
from blocks.data.video import read_video
from blocks.generation import Completion, GenerationConfig
from blocks.generation.tokens import DEFAULT_STOP_TOKENS, generation_token_ids

SAMPLING_DEFAULTS = {"temperature": 0.7, "top_p": 0.8, "top_k": 100, "repetition_penalty": 1.03}
GREEDY_DEFAULTS = {"repetition_penalty": 1.2}
# GenerationConfig fields a caller may pass to chat() as keywords (the rest are chat()'s own arguments).
GENERATION_KEYWORDS = ("temperature", "top_p", "top_k", "repetition_penalty", "min_new_tokens", "num_samples",
                       "seed", "return_logprobs", "stop_token_ids")
_OFFICIAL_ONLY = {"num_beams": "beam search is not implemented (sampling=False is greedy)",
                  "do_sample": "use sampling=True/False", "vision_hidden_states": "image features are not reused",
                  "image": "put images in the message content", "tokenizer": "the Chat holds its tokenizer",
                  "processor": "the Chat holds its processor settings"}


@dataclass
class ChatResponse:
    """One reply: ``answer``; ``reasoning`` in thinking mode (None otherwise); ``text`` = everything
    generated; ``well_formed`` (``blocks.answers.parse_completion``); the engine's ``completion``."""

    answer: str
    reasoning: str | None
    finish_reason: str
    prompt_tokens: int
    generated_tokens: int
    text: str
    well_formed: bool
    completion: Completion

    def message(self) -> dict[str, str]:
        """The assistant turn to append for the next round (its reasoning is dropped, as the template does)."""
        return {"role": "assistant", "content": self.answer}


class ChatStream:
    """Text pieces as they are generated; ``response`` holds the ``ChatResponse`` once iterated to the end."""

    def __init__(self, run, tokenizer: PreTrainedTokenizerBase) -> None:
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.response: ChatResponse | None = None
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self.response = run(self._streamer)
            except BaseException as error:  # re-raised in the consumer's thread
                self._error = error
                self._streamer.end()

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        yield from (piece for piece in self._streamer if piece)  # the streamer also emits "" while a word is open
        self._thread.join()
        if self._error is not None:
            raise self._error


class Chat:
    """A model with the tokenizer, processor settings and stop ids it was trained with.

    Args:
        model: the assembly (set to eval mode here).
        tokenizer: its tokenizer.
        processor_config: its processor settings (``ProcessorConfig.from_checkpoint``).
        stop_token_ids: ids that end a reply (MiniCPM-V 4.5: ``<|im_end|>``, ``<|endoftext|>``).
        video_fps, max_groups, max_packing: how a video given as a path is sampled (``read_video``).
    """

    def __init__(self, model: MiniCPMV, tokenizer: PreTrainedTokenizerBase, processor_config: ProcessorConfig,
                 stop_token_ids: Sequence[int], video_fps: float = 3.0, max_groups: int = 180,
                 max_packing: int = 3) -> None:
        vocab = model.llm.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}")
        if not stop_token_ids:
            raise ValueError("stop_token_ids is empty: replies would run to max_new_tokens")
        side = processor_config.scale_resolution // processor_config.patch_size
        per_group = model.resampler.tokens_per_group([(side, side)])
        if isinstance(processor_config.tokens_per_group, int) and processor_config.tokens_per_group != per_group:
            raise ValueError(f"the processor settings say {processor_config.tokens_per_group} tokens per image slice, "
                             f"the model's resampler makes {per_group}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.processor_config = replace(processor_config, tokens_per_group=model.resampler.tokens_per_group)
        ids = generation_token_ids(tokenizer)
        # Ids past the tokenizer (the embedding may be padded, as the tiny model's is) decode to nothing.
        banned = (*ids["banned_token_ids"], *range(len(tokenizer), vocab))
        self.token_ids = {**ids, "stop_token_ids": tuple(stop_token_ids), "banned_token_ids": banned}
        self.load_video = functools.partial(read_video, fps=video_fps, max_groups=max_groups, max_packing=max_packing)

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike, *, tokenizer: PreTrainedTokenizerBase | str | None = None,
                        processor_config: ProcessorConfig | None = None, stop_token_ids: Sequence[int] | None = None,
                        dtype: torch.dtype = torch.float32, **options) -> "Chat":
        """A ready chat from an official-format directory (config.json + safetensors + tokenizer files +
        preprocessor_config.json + generation_config.json); ``options`` go to ``Chat``.

        Raises:
            FileNotFoundError: a file is missing; the message names it and the argument to pass instead.
        """
        directory = Path(directory)
        if tokenizer is None:
            tokenizer = _tokenizer_of(directory)
        elif isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(tokenizer)
        if processor_config is None:
            if not (directory / PREPROCESSOR_FILE).is_file():
                raise FileNotFoundError(f"{directory} has no {PREPROCESSOR_FILE}: pass processor_config="
                                        f"ProcessorConfig(...) with the settings the model was trained with "
                                        f"(e.g. scale_resolution=112, max_slice_nums=1 for the tiny pipeline)")
            processor_config = ProcessorConfig.from_checkpoint(directory)
        if stop_token_ids is None:
            stop_token_ids = _stop_ids_of(directory, tokenizer)
        return cls(load_official(directory, dtype=dtype), tokenizer, processor_config, stop_token_ids, **options)

    def chat(self, msgs: Sequence, *, system_prompt: str = "", enable_thinking: bool = False, stream: bool = False,
             sampling: bool = True, max_new_tokens: int = 2048, max_slice_nums: int | None = None,
             use_image_id: bool | None = None, temporal_ids: Sequence | None = None,
             thinking_budget: int | None = None, max_inp_length: int | None = None, **generation: Any):
        """Reply to one conversation (a list of messages) or a batch (a list of conversations).

        ``generation`` takes ``GENERATION_KEYWORDS``; anything else is a TypeError. ``temporal_ids``:
        the frame groups of a conversation whose images are video frames (a list per conversation
        in a batch). ``thinking_budget``: most reasoning tokens before ``</think>`` is forced.

        Returns:
            A ``ChatResponse`` (a list of ``num_samples`` of them when > 1), a list of those for a
            batch, or with ``stream=True`` a ``ChatStream`` of text pieces.
        """
        _check_keywords(generation)
        if not sampling and {"temperature", "top_p", "top_k"} & set(generation):
            raise ValueError("temperature / top_p / top_k apply only with sampling=True")
        if thinking_budget is not None and not enable_thinking:
            raise ValueError("thinking_budget needs enable_thinking=True (a short answer has no reasoning)")
        batched = bool(msgs) and isinstance(msgs[0], (list, tuple))
        conversations = list(msgs) if batched else [msgs]
        groups = list(temporal_ids) if batched and temporal_ids is not None else [temporal_ids] * len(conversations)
        config = self._generation_config(sampling, max_new_tokens, thinking_budget, generation)
        if stream and (batched or config.num_samples > 1):
            raise ValueError("stream=True follows one reply: one conversation, num_samples=1")
        processor = MiniCPMVProcessor(self.tokenizer, self._processor_config(
            enable_thinking, max_slice_nums, use_image_id, max_inp_length))
        records = [record_from_messages(conversation, temporal_ids=group, system_prompt=system_prompt,
                                        sample_id=f"conversation {i}", load_video=self.load_video)
                   for i, (conversation, group) in enumerate(zip(conversations, groups))]
        batch = collate([processor(record, mode="inference") for record in records], self.tokenizer.pad_token_id,
                        padding_side="left")
        mode = "long" if enable_thinking else "short"

        def run(streamer=None) -> list[ChatResponse]:
            device = next(self.model.parameters()).device
            completions = self.model.generate(batch.to(device), config, streamer=streamer, tokenizer=self.tokenizer)
            return [_response(c, mode) for c in completions]

        if stream:
            return ChatStream(lambda streamer: run(streamer)[0], self.tokenizer)
        replies = run()
        per_conversation = [replies[i:i + config.num_samples] for i in range(0, len(replies), config.num_samples)]
        shaped = [r if config.num_samples > 1 else r[0] for r in per_conversation]
        return shaped if batched else shaped[0]

    def _generation_config(self, sampling: bool, max_new_tokens: int, thinking_budget: int | None,
                           generation: dict) -> GenerationConfig:
        defaults = SAMPLING_DEFAULTS if sampling else GREEDY_DEFAULTS
        return GenerationConfig(**{**self.token_ids, **defaults, **generation}, do_sample=sampling,
                                max_new_tokens=max_new_tokens, thinking_budget=thinking_budget)

    def _processor_config(self, enable_thinking: bool, max_slice_nums: int | None, use_image_id: bool | None,
                          max_inp_length: int | None) -> ProcessorConfig:
        changes: dict[str, Any] = {"enable_thinking": enable_thinking, "max_length": max_inp_length}
        if max_slice_nums is not None:
            changes["max_slice_nums"] = max_slice_nums
        if use_image_id is not None:  # explicit: frames named too, as the official processor does
            changes.update(use_image_id=use_image_id, video_image_id=use_image_id)
        return replace(self.processor_config, **changes)


def _response(completion: Completion, mode: str) -> ChatResponse:
    parsed = parse_completion(completion.text, mode)
    return ChatResponse(answer=parsed.answer, reasoning=parsed.reasoning, finish_reason=completion.finish_reason,
                        prompt_tokens=completion.prompt_tokens, generated_tokens=completion.generated_tokens,
                        text=completion.text, well_formed=parsed.well_formed, completion=completion)


def _check_keywords(generation: dict) -> None:
    unknown = sorted(set(generation) - set(GENERATION_KEYWORDS))
    if unknown:
        hints = "; ".join(f"{k}: {_OFFICIAL_ONLY[k]}" for k in unknown if k in _OFFICIAL_ONLY)
        raise TypeError(f"chat() got unknown keyword(s) {unknown}" + (f" ({hints})" if hints else "") +
                        f"; generation keywords are {list(GENERATION_KEYWORDS)}")


def _tokenizer_of(directory: Path) -> PreTrainedTokenizerBase:
    if (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file():
        return load_tokenizer(directory)
    raise FileNotFoundError(f"{directory} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): pass "
                            f"tokenizer=<a tokenizer or its directory> (a training run keeps its tokenizer in "
                            f"<output_dir>/tokenizer/ and writes it into its export)")


def _stop_ids_of(directory: Path, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    path = directory / "generation_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no generation_config.json: pass stop_token_ids=..., e.g. "
                                f"tokenizer.convert_tokens_to_ids({list(DEFAULT_STOP_TOKENS)})")
    eos = json.loads(path.read_text()).get("eos_token_id")
    if eos is None:
        raise ValueError(f"{path} has no eos_token_id: pass stop_token_ids=...")
    ids = tuple(eos) if isinstance(eos, list) else (eos,)
    if max(ids) >= len(tokenizer):
        raise ValueError(f"{path}: eos_token_id {list(ids)} outside the tokenizer's {len(tokenizer)} tokens")
    return ids
