"""The official chat message format -> ``Record`` (what ``model.chat(msgs)`` of MiniCPM-V 4.5 accepts).

A conversation is ``[{"role": "user"|"assistant", "content": str | [item, ...]}, ...]``, first turn
the user's. The items of a content list are joined with ``"\\n"`` (as the official ``chat()`` does),
each one being:

- ``str``: text;
- ``PIL.Image.Image``: an image (``<image>`` marker);
- ``VideoClip``: a video already sampled into frames and temporal-id groups (``<video>`` marker);
- a path (``os.PathLike``): an image file when its suffix is an image format, else a video file,
  decoded and sampled by ``load_video`` (e.g. ``blocks.data.video.read_video`` at some fps).

The official way to give a video also works: its frames as consecutive ``PIL.Image`` items of one
message plus ``temporal_ids`` (the frame groups, e.g. ``[[0, 5, 10], [15, 20, 25]]``); every image
of that conversation is then a frame. An assistant turn may carry ``reasoning_content``; the chat
template drops it before the last user turn (``blocks.data.chat``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from PIL import Image

from blocks.data.image_io import load_image
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record, VideoClip

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
ROLES = ("user", "assistant")
VideoLoader = Callable[[Path], VideoClip]


def record_from_messages(messages: Sequence[Mapping[str, Any]], *, temporal_ids: Sequence[Sequence[int]] | None = None,
                         system_prompt: str = "", sample_id: str = "chat",
                         load_video: VideoLoader | None = None) -> Record:
    """One conversation in the official message format as a ``Record`` (see the module docstring).

    Raises:
        ValueError: an empty conversation, a role other than user/assistant, a first turn that is not
            the user's, an unknown content item, a video path without ``load_video``, or frames
            (``temporal_ids``) that are not consecutive items of one message.
    """
    if not messages:
        raise ValueError(f"{sample_id}: empty conversation")
    if messages[0].get("role") != "user":
        raise ValueError(f"{sample_id}: the first message must be the user's, got {messages[0].get('role')!r}")
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    images: list[Image.Image] = []
    videos: list[VideoClip] = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"{sample_id}: message {index} has role {role!r}; roles are {ROLES} "
                             f"(a system message goes in system_prompt)")
        items = [content] if isinstance(content, str) else list(content or [])
        kinds, texts = [], []
        for item in items:
            kind, media = _classify(item, f"{sample_id}: message {index}", load_video)
            kinds.append(kind)
            texts.append(item if kind == "text" else IMAGE_MARKER if kind == "image" else VIDEO_MARKER)
            (images if kind == "image" else videos if kind == "video" else []).append(media)
        if temporal_ids is not None and "image" in kinds:
            texts = _frames_as_video(kinds, texts, f"{sample_id}: message {index}")
        turn = {"role": role, "content": "\n".join(texts)}
        if message.get("reasoning_content") is not None:
            turn["reasoning_content"] = message["reasoning_content"]
        turns.append(turn)
    if temporal_ids is not None:
        if not images:
            raise ValueError(f"{sample_id}: temporal_ids given but the conversation has no frames")
        if videos:
            raise ValueError(f"{sample_id}: a conversation with temporal_ids (frames) cannot also hold video items")
        if sum(turn["content"].count(VIDEO_MARKER) for turn in turns) != 1:
            raise ValueError(f"{sample_id}: with temporal_ids, all frames must be consecutive items of one message")
        videos, images = [VideoClip(frames=images, groups=[list(g) for g in temporal_ids], source=sample_id)], []
    return Record(id=sample_id, conversations=turns, images=images, videos=videos)


def _classify(item: Any, where: str, load_video: VideoLoader | None) -> tuple[str, Any]:
    """("text" | "image" | "video", the loaded media) of one content item."""
    if isinstance(item, str):
        return "text", None
    if isinstance(item, Image.Image):
        return "image", item
    if isinstance(item, VideoClip):
        return "video", item
    if isinstance(item, os.PathLike):
        path = Path(item)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return "image", load_image(path, where=where)
        if load_video is None:
            raise ValueError(f"{where}: {path} is not an image ({sorted(IMAGE_SUFFIXES)}) and no video loader is set")
        return "video", load_video(path)
    raise ValueError(f"{where}: content items are str, PIL.Image, VideoClip or a path, got {type(item).__name__}")


def _frames_as_video(kinds: list[str], texts: list[str], where: str) -> list[str]:
    """``texts`` with the run of image items (the frames) folded into one video marker."""
    first, last = kinds.index("image"), len(kinds) - kinds[::-1].index("image")
    if any(kind != "image" for kind in kinds[first:last]):
        raise ValueError(f"{where}: video frames (temporal_ids) must be consecutive items of one message")
    return texts[:first] + [VIDEO_MARKER] + texts[last:]
