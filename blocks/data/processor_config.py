"""The processor's settings, and reading them from a checkpoint (``preprocessor_config.json`` + ``config.json``).

``ProcessorConfig.from_checkpoint(dir)`` gives the settings a checkpoint was trained with, so nobody
copies ``max_slice_nums``, ``use_image_id``, ``query_num`` or ``scale_resolution`` by hand. The
official image processor reads ``preprocessor_config.json``; the official ``chat()`` asserts that
its ``image_feature_size``, ``patch_size``, ``max_slice_nums`` and ``slice_mode`` equal the model's
``config.json``. Here a disagreement that would break the model (tokens per group, patch size) is an
error naming both files; one that only changes the prompt (``max_slice_nums``) is logged and the
preprocessor's value wins, as it does in the official processor.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from blocks.data.image_processing import NORM_MEAN, NORM_STD
from blocks.data.placeholders import MARKERS, TokensPerGroup

logger = logging.getLogger(__name__)
PREPROCESSOR_FILE = "preprocessor_config.json"
MODEL_CONFIG_FILE = "config.json"
# preprocessor_config.json keys that are also MarkerTokens fields (the official 4.5 strings are our defaults)
_MARKER_KEYS = ("im_start", "im_end", "slice_start", "slice_end", "unk", "im_id_start", "im_id_end")


@dataclass(frozen=True)
class ProcessorConfig:
    """Official defaults (preprocessor_config.json); tiny CPU runs use e.g. ``scale_resolution=112``.

    ``tokens_per_group`` is the resampler's count (an int, or its ``tokens_per_group`` method).
    ``enable_thinking`` only shapes the inference generation prompt; in training the template's own
    rule applies (a final answer without reasoning gets the empty think block, excluded from loss).

    Video frames are never sliced and, by default, carry no ``<image_id>``: the model card's "Chat
    with Video" settings (``max_slice_nums=1, use_image_id=False``). ``video_image_id=True`` writes
    ``<image_id>k</image_id>`` before each frame group's ``<image>``, k counting every image and frame
    before it in the prompt: what the official processor does when ``use_image_id`` is on for a video.
    """

    max_slice_nums: int = 9
    scale_resolution: int = 448
    patch_size: int = 14
    use_image_id: bool = True
    enable_thinking: bool = False
    max_length: int | None = None
    tokens_per_group: int | TokensPerGroup = 64
    video_image_id: bool = False

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike, **overrides) -> "ProcessorConfig":
        """The settings of an official-format checkpoint directory; ``overrides`` replace fields.

        Raises:
            FileNotFoundError: ``preprocessor_config.json`` or ``config.json`` is missing.
            ValueError: the two files disagree on tokens per group or patch size, or the checkpoint
                asks for something this processor does not do (``slice_mode: false``, other marker
                strings or pixel normalisation).
        """
        directory = Path(directory)
        pre, model = _read_json(directory / PREPROCESSOR_FILE), _read_json(directory / MODEL_CONFIG_FILE)
        where = f"{directory / PREPROCESSOR_FILE} vs {directory / MODEL_CONFIG_FILE}"
        unsupported = [f"{key}={pre[key]!r}" for key in _MARKER_KEYS
                       if key in pre and pre[key] != getattr(MARKERS, key)]
        unsupported += [f"{key}={pre[key]}" for key, ours in (("norm_mean", NORM_MEAN), ("norm_std", NORM_STD))
                        if key in pre and any(v != ours for v in pre[key])]
        if not pre.get("slice_mode", True) or not model.get("slice_mode", True):
            unsupported.append("slice_mode=false (images fed unresized)")
        if unsupported:
            raise ValueError(f"{directory / PREPROCESSOR_FILE}: not supported by this processor: "
                             f"{', '.join(unsupported)}")
        tokens = _agreed(pre.get("image_feature_size"), model.get("query_num"), "image_feature_size", "query_num",
                         where)
        patch = _agreed(pre.get("patch_size"), model.get("patch_size"), "patch_size", "patch_size", where)
        model_slices = (model.get("slice_config") or {}).get("max_slice_nums")
        slices = pre.get("max_slice_nums", model_slices)
        if model_slices is not None and slices != model_slices:
            logger.warning("%s: max_slice_nums %s in %s, %s in %s; using %s (the official processor's source)",
                           directory, slices, PREPROCESSOR_FILE, model_slices, MODEL_CONFIG_FILE, slices)
        fields = {"max_slice_nums": slices, "scale_resolution": pre.get("scale_resolution", model.get("image_size")),
                  "patch_size": patch, "tokens_per_group": tokens,
                  # the official image processor's default when the key is absent
                  "use_image_id": bool(pre.get("use_image_id", False))}
        return cls(**{**{k: v for k, v in fields.items() if v is not None}, **overrides})

    def preprocessor_config(self) -> dict:
        """The official ``preprocessor_config.json`` fields of these settings (inverse of ``from_checkpoint``).

        Raises:
            ValueError: ``tokens_per_group`` is not a fixed count (the official format has one number).
        """
        if not isinstance(self.tokens_per_group, int):
            raise ValueError("preprocessor_config.json holds one image_feature_size; tokens_per_group is a function")
        return {
            "image_processor_type": "MiniCPMVImageProcessor",
            "auto_map": {"AutoProcessor": "processing_minicpmv.MiniCPMVProcessor",
                         "AutoImageProcessor": "image_processing_minicpmv.MiniCPMVImageProcessor"},
            "processor_class": "MiniCPMVProcessor",
            "max_slice_nums": self.max_slice_nums, "scale_resolution": self.scale_resolution,
            "patch_size": self.patch_size, "use_image_id": self.use_image_id,
            "image_feature_size": self.tokens_per_group,
            **{key: getattr(MARKERS, key) for key in _MARKER_KEYS},
            "slice_mode": True, "norm_mean": [NORM_MEAN] * 3, "norm_std": [NORM_STD] * 3, "version": 2.6,
        }


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed JSON ({error.msg}, line {error.lineno})") from error


def _agreed(pre_value: int | None, model_value: int | None, pre_key: str, model_key: str, where: str) -> int | None:
    if pre_value is not None and model_value is not None and pre_value != model_value:
        raise ValueError(f"{where}: {pre_key}={pre_value} but {model_key}={model_value}; the model and its "
                         f"processor must agree")
    return pre_value if pre_value is not None else model_value
