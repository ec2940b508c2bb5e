"""Talk to a checkpoint: ``python tasks/chat.py checkpoint=<dir> [prompt=... image=<path> video=<path>]``.

With ``prompt`` it answers once (streamed) and exits; without, it opens an interactive terminal chat
(``/image``, ``/video``, ``/think``, ``/reset``, ``/exit``). A thin Hydra entry point over
``assemblies.chat_terminal``; see conf/chat.yaml for every option and docs/inference.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from assemblies.chat_terminal import interactive, load_chat, one_shot


def paths(value) -> list[str]:
    """A path or a list of paths from the command line (None: none)."""
    if value is None:
        return []
    return [str(v) for v in value] if OmegaConf.is_list(value) or isinstance(value, list) else [str(value)]


@hydra.main(version_base="1.3", config_path="../conf", config_name="chat")
def main(cfg: DictConfig) -> None:
    chat = load_chat(cfg.checkpoint, cfg.tokenizer, OmegaConf.to_container(cfg.processor),
                     OmegaConf.to_container(cfg.stop_tokens) if cfg.stop_tokens else None, cfg.dtype, cfg.video_fps)
    options = {key: value for key, value in OmegaConf.to_container(cfg.generation).items() if value is not None}
    options.update(system_prompt=cfg.system_prompt, sampling=cfg.sampling, max_new_tokens=cfg.max_new_tokens,
                   max_slice_nums=cfg.max_slice_nums, use_image_id=cfg.use_image_id)
    if cfg.thinking_budget is not None:
        options["thinking_budget"] = cfg.thinking_budget
    if cfg.prompt is not None:
        one_shot(chat, str(cfg.prompt), paths(cfg.image), paths(cfg.video), cfg.thinking, options)
    else:
        interactive(chat, cfg.thinking, options)


if __name__ == "__main__":
    main()
