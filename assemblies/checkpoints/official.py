"""The official MiniCPM-V 4.5 checkpoint layout: config.json + sharded safetensors + index, both ways.

Our assembly's state_dict keys already equal the official ones (``vpm.*``, ``resampler.*``,
``llm.*``), so import and export are a strict key/shape check plus dtype conversion; the work here
is mapping config.json fields to our builders and back. Safetensors only: nothing is unpickled.

    model = load_official("MiniCPM-V-4_5/")                 # builds from its config.json
    export_official(model, "out/", dtype=torch.bfloat16)    # config.json, model-0000k-of-0000n, index
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Mapping

import torch
import transformers
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from assemblies.checkpoints.files import INDEX_NAME, checkpoint_files, iter_shards, tensor_shapes
from assemblies.mllm import MiniCPMV
from blocks.llm import qwen3
from blocks.resampler import PerceiverResampler, resampler3d
from blocks.vision import NaViTSiglip, navit_siglip

DEFAULT_SHARD_BYTES = 5 * 1024 ** 3
# The model repository whose remote code an export's auto_map names (transformers' "repo--module.Class").
OFFICIAL_REPO = "openbmb/MiniCPM-V-4_5"
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


# ---------------------------------------------------------------- config.json <-> builders

def official_config(model: MiniCPMV, dtype: torch.dtype = torch.bfloat16, max_slice_nums: int = 9,
                    image_size: int = 448) -> dict:
    """The official config.json fields describing ``model`` (NaViT SigLIP + perceiver resampler + Qwen3).

    ``image_size`` (the slice resolution) and ``max_slice_nums`` are the processor settings the
    official ``chat()`` checks against ``preprocessor_config.json``. ``auto_map`` names the official
    repository's code (``openbmb/MiniCPM-V-4_5--modeling_minicpmv.MiniCPMV``): an export holds no
    Python files, and transformers fetches that code under ``trust_remote_code=True``.

    The official code derives the resampler's head count as hidden_size // 128; a model whose heads
    differ (the tiny preset) gets one extra field, ``resampler_num_heads``, that the official loader ignores.
    A resampler with ``positions_in_values`` gets ``resampler_positions_in_values: true``; our loader
    restores it, the official code ignores it and so computes that model's outputs differently.

    Raises:
        ValueError: the model's blocks have no official layout (e.g. an MLP projector).
    """
    vpm, resampler, llm = model.vpm, model.resampler, model.llm
    if not isinstance(vpm, NaViTSiglip) or not isinstance(resampler, PerceiverResampler):
        raise ValueError(f"the official layout needs navit_siglip + a perceiver resampler, not "
                         f"{type(vpm).__name__} + {type(resampler).__name__}")
    c = llm.config
    layer = vpm.encoder.layers[0]
    config = {
        "_name_or_path": "openbmb/MiniCPM-V-4_5", "version": 4.5, "architectures": ["MiniCPMV"],
        "auto_map": remote_code_map({"AutoConfig": "configuration_minicpm.MiniCPMVConfig",
                                     "AutoModel": "modeling_minicpmv.MiniCPMV",
                                     "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"}),
        "attention_bias": c.attention_bias, "attention_dropout": c.attention_dropout,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "head_dim": c.head_dim,
        "hidden_act": c.hidden_act, "hidden_size": c.hidden_size, "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
        "max_window_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers, "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps, "rope_scaling": None,
        "rope_theta": _int_if_whole(c.rope_parameters["rope_theta"]), "sliding_window": None,
        "tie_word_embeddings": c.tie_word_embeddings, "torch_dtype": _DTYPE_NAMES[dtype],
        "transformers_version": transformers.__version__, "use_cache": True, "use_sliding_window": False,
        "vocab_size": c.vocab_size,
        "batch_vision_input": True, "batch_3d_resampler": True, "drop_vision_last_layer": False,
        "image_size": image_size, "model_type": "minicpmv", "patch_size": vpm.patch_size,
        "query_num": resampler.num_queries,
        "slice_config": {"max_slice_nums": max_slice_nums, "patch_size": vpm.patch_size, "model_type": "minicpmv"},
        "slice_mode": True,
        "vision_config": {"hidden_size": vpm.width, "image_size": vpm.embeddings.position_grid * vpm.patch_size,
                          "intermediate_size": layer.mlp.fc1.out_features, "model_type": "siglip",
                          "num_attention_heads": layer.self_attn.num_heads,
                          "num_hidden_layers": len(vpm.encoder.layers), "patch_size": vpm.patch_size},
    }
    if resampler.num_heads != c.hidden_size // 128:
        config["resampler_num_heads"] = resampler.num_heads
    if resampler.positions_in_values:
        config["resampler_positions_in_values"] = True
    return config


def remote_code_map(auto_map: Mapping) -> dict:
    """``auto_map`` with every ``module.Class`` reference (or list of them) qualified by ``OFFICIAL_REPO``."""
    def qualify(reference):
        if isinstance(reference, list):
            return [qualify(r) for r in reference]
        return reference if reference is None or "--" in reference else f"{OFFICIAL_REPO}--{reference}"
    return {key: qualify(reference) for key, reference in auto_map.items()}


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def official_dims(config: Mapping) -> dict:
    """The sizes of an official config.json under the names of a recipe's ``dims`` (conf/recipe)."""
    vision, hidden = config["vision_config"], config["hidden_size"]
    patch = vision.get("patch_size", 14)
    return {
        "vision_width": vision["hidden_size"],
        # The official model deletes the last ViT layer when drop_vision_last_layer is set (4.5 ships false).
        "vision_depth": vision["num_hidden_layers"] - int(config.get("drop_vision_last_layer", False)),
        "vision_heads": vision["num_attention_heads"], "vision_mlp": vision["intermediate_size"],
        "patch_size": patch, "position_grid": vision["image_size"] // patch,
        "queries": config["query_num"], "resampler_heads": config.get("resampler_num_heads", hidden // 128),
        "resampler_region_grid": None,  # an initialisation: loaded weights replace it
        "llm_hidden": hidden, "llm_layers": config["num_hidden_layers"], "llm_heads": config["num_attention_heads"],
        "llm_kv_heads": config["num_key_value_heads"],
        "llm_head_dim": config.get("head_dim", hidden // config["num_attention_heads"]),
        "llm_mlp": config["intermediate_size"], "vocab_size": config["vocab_size"],
        "bos_token_id": config.get("bos_token_id"), "eos_token_id": config.get("eos_token_id"),
    }


def build_from_official_config(config: Mapping, attn_backend: str = "auto") -> MiniCPMV:
    """A randomly initialised assembly with the sizes of an official config.json (current device)."""
    d = official_dims(config)
    vpm = navit_siglip(d["vision_width"], d["vision_depth"], d["vision_heads"], d["vision_mlp"],
                       patch_size=d["patch_size"], position_grid=d["position_grid"], attn_backend=attn_backend)
    resampler = resampler3d(d["queries"], d["llm_hidden"], d["vision_width"], d["resampler_heads"],
                            attn_backend=attn_backend,
                            positions_in_values=config.get("resampler_positions_in_values", False))
    llm = qwen3(d["vocab_size"], d["llm_hidden"], d["llm_layers"], d["llm_heads"], d["llm_kv_heads"],
                d["llm_head_dim"], d["llm_mlp"], rope_theta=config.get("rope_theta", 1e6),
                rms_norm_eps=config.get("rms_norm_eps", 1e-6),
                max_position_embeddings=config.get("max_position_embeddings", 40960),
                tie_word_embeddings=config.get("tie_word_embeddings", False),
                bos_token_id=d["bos_token_id"], eos_token_id=d["eos_token_id"])
    return MiniCPMV(vpm, resampler, llm)


def check_keys(module: nn.Module, shapes: Mapping[str, tuple[int, ...]], source: str,
               optional: frozenset[str] = frozenset()) -> None:
    """Raise one ValueError listing missing, unexpected and mis-shaped tensors of ``source`` vs ``module``."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    missing = sorted(set(expected) - set(shapes) - optional)
    unexpected = sorted(set(shapes) - set(expected))
    mismatched = [f"{n}: checkpoint {shapes[n]} vs model {expected[n]}" for n in sorted(set(shapes) & set(expected))
                  if tuple(shapes[n]) != expected[n]]
    problems = [f"{label} ({len(items)}): {items[:20]}{' ...' if len(items) > 20 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if items]
    if problems:
        raise ValueError(f"{source} does not match the model:\n  " + "\n  ".join(problems))


def load_tensors_into(module: nn.Module, files: Mapping[str, Path], source: str, dtype: torch.dtype | None,
                      strip_prefix: str = "", optional: frozenset[str] = frozenset()) -> None:
    """Strictly load the tensors of ``files`` into ``module``.

    ``dtype`` converts the tensors read; it decides the parameters' dtype when they are on meta
    (replaced), while a materialised module keeps its own dtype (the tensors are copied into it).
    """
    check_keys(module, tensor_shapes(files, strip_prefix), source, optional)
    # Meta parameters are replaced by the loaded tensors; real ones are copied into (keeping their
    # device and dtype, so loading into a prepared model never moves it).
    assign = any(p.is_meta for p in module.parameters())
    for shard in iter_shards(files, dtype, strip_prefix):
        module.load_state_dict(shard, strict=False, assign=assign)
    for sub in module.modules():
        if isinstance(sub, PreTrainedModel) and sub.config.tie_word_embeddings:
            sub.tie_weights()  # lm_head must point at the loaded embedding, not the replaced one
    unloaded = [name for name, p in module.named_parameters() if p.is_meta]
    if unloaded:
        raise ValueError(f"{source} left parameters unloaded: {unloaded[:20]}")


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create parameters on the meta device but buffers for real.

    Non-persistent buffers (the LLM's rotary frequencies) are not in a checkpoint, so they must be
    computed at construction; parameters will be replaced by the checkpoint's tensors anyway.
    """
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def load_official(directory: str | Path, model: MiniCPMV | None = None, dtype: torch.dtype | None = torch.float32,
                  attn_backend: str = "auto") -> MiniCPMV:
    """An assembly holding the weights of an official-format checkpoint directory.

    Args:
        directory: config.json + ``model.safetensors`` or shards with ``model.safetensors.index.json``.
        model: load into this assembly instead of building one from config.json.
        dtype: dtype of a model built here (None keeps the checkpoint's, e.g. bf16); a given
            ``model`` keeps its own dtype and device.
        attn_backend: for the blocks built from config.json.

    Raises:
        ValueError: missing/unexpected keys or shape mismatches (all listed at once).
    """
    directory = Path(directory)
    files = checkpoint_files(directory)
    if model is None:
        config = json.loads((directory / "config.json").read_text())
        with parameters_on_meta():
            model = build_from_official_config(config, attn_backend)
    load_tensors_into(model, files, str(directory), dtype)
    return model


# ---------------------------------------------------------------- export

def shard_plan(model: nn.Module, dtype: torch.dtype = torch.bfloat16,
               max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[dict[str, tuple[int, ...]]]:
    """Name -> shape per shard, filled in state_dict order up to ``max_shard_bytes`` (works on meta)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    used = 0
    for name, tensor in model.state_dict().items():
        size = tensor.numel() * itemsize
        if shards[-1] and used + size > max_shard_bytes:
            shards.append({})
            used = 0
        shards[-1][name] = tuple(tensor.shape)
        used += size
    return shards


def shard_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def export_index(model: nn.Module, dtype: torch.dtype = torch.bfloat16,
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> dict:
    """The ``model.safetensors.index.json`` an export would write (no tensor is materialised)."""
    plan = shard_plan(model, dtype, max_shard_bytes)
    itemsize = torch.empty((), dtype=dtype).element_size()
    total = sum(torch.Size(shape).numel() * itemsize for shard in plan for shape in shard.values())
    return {"metadata": {"total_size": total},
            "weight_map": {name: shard_name(i, len(plan)) for i, shard in enumerate(plan) for name in shard}}


def export_official(model: MiniCPMV, directory: str | Path, dtype: torch.dtype = torch.bfloat16,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES, config: Mapping | None = None) -> Path:
    """Write ``model`` in the official layout: ``config`` (default ``official_config(model, dtype)``) as
    config.json, size-capped shards and their index. Weights only: ``export_model_dir``
    (``assemblies.checkpoints.model_dir``) adds the tokenizer and the processor and generation settings."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("the model has no weights (meta device): load or initialise them before exporting; "
                         "export_index(model) gives the layout alone")
    directory = Path(directory)
    config = dict(config) if config is not None else official_config(model, dtype)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    plan = shard_plan(model, dtype, max_shard_bytes)
    for i, shard in enumerate(plan):
        # copy=True also unties shared storage (tied embeddings), which safetensors refuses to save
        tensors = {name: state[name].detach().to("cpu", dtype, copy=True).contiguous() for name in shard}
        save_file(tensors, directory / shard_name(i, len(plan)), metadata={"format": "pt"})
    (directory / INDEX_NAME).write_text(json.dumps(export_index(model, dtype, max_shard_bytes), indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
