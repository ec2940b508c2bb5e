"""Layer-sampled figures of the video-efficiency benchmark: the released widths, one layer deep.

At the released size (tower 27 layers of width 1152, Qwen3 36 layers of 4096, vocabulary 151,748) a
long video's answer takes far too long on a small CPU, and the cpu scale's shrunken blocks do not keep
the released split of the time between tower, resampler and LLM. A layer-sampled scale builds the
model with ONE tower layer and ONE decoder layer at the real widths, with the real resamplers,
embeddings and lm_head, on the real sequence lengths; the same ``generate`` calls time those two
layers inside each phase (``PhaseClock(layers=...)``) and each phase is extrapolated by depth:

    phase at full depth = measured phase + (depth - 1) x the layer's measured time in that phase

(tower: the tower depth; prefill and the decode steps: the LLM depth). This assumes identical layers
(same shapes, same time) and no effect of one layer on the next: a decoder layer's weights (0.8 GB)
are out of any CPU cache already, as 36 of them would be.

Memory: in inference the layers run one after another, so the activations' peak of a phase is the
one-layer model's; what accumulates across layers is the KV cache. The estimate is the one-layer peak
per phase (``LiveTensorBytes``) plus, in the phases from the LLM's first call on, (depth - 1) x one
layer's KV cache at the answer's end (an upper bound by ``new_tokens`` tokens during the prefill, and
for the glue before it: embedding and scatter, counted as LLM time).
"""

from __future__ import annotations

from torch import nn

from assemblies.benchmarks.measure import LiveTensorBytes
from assemblies.benchmarks.video_efficiency_clock import PhaseClock, answer
from assemblies.mllm import MiniCPMV
from blocks.batch import MultimodalBatch
from blocks.llm import layer_classes as llm_layer_classes

# A phase's sampled layer time is repeated by this block's depth.
LAYER_DEPTH = {"tower": "tower", "prefill": "llm", "decode": "llm"}
LLM_PHASES = ("prefill", "decode", "glue")


def sampled_layers(model: MiniCPMV) -> dict[str, nn.Module]:
    """{"tower": its one encoder layer, "llm": its one decoder layer} of a layer-sampled model."""
    found = {"tower": [m for m in model.vpm.modules() if isinstance(m, tuple(model.vpm.layer_classes))],
             "llm": [m for m in model.llm.modules() if isinstance(m, llm_layer_classes(model.llm))]}
    for block, layers in found.items():
        if len(layers) != 1:
            raise ValueError(f"a layer-sampled model needs exactly one {block} layer, found {len(layers)}")
    return {block: layers[0] for block, layers in found.items()}


def extrapolate_seconds(seconds: dict[str, float], depths: dict[str, int]) -> dict[str, float]:
    """Seconds per phase at full depth from a layer-sampled answer (``PhaseClock`` with ``layers``).

    Args:
        seconds: PhaseClock's keys with ``{tower,prefill,decode}_layer``, for both clock prefixes.
        depths: {"tower": depth, "llm": depth} of the full model.

    Returns:
        PhaseClock's keys without the layer ones: tower, resampler, prefill, first_token, decode,
        answer (= first_token + decode), for both clock prefixes.
    """
    estimated = {}
    for prefix in PhaseClock.CLOCKS:
        added = {phase: (depths[block] - 1) * seconds[f"{prefix}{phase}_layer"] for phase, block in LAYER_DEPTH.items()}
        first_token = seconds[prefix + "first_token"] + added["tower"] + added["prefill"]
        decode = seconds[prefix + "decode"] + added["decode"]
        estimated.update({prefix + "tower": seconds[prefix + "tower"] + added["tower"],
                          prefix + "resampler": seconds[prefix + "resampler"],
                          prefix + "prefill": seconds[prefix + "prefill"] + added["prefill"],
                          prefix + "first_token": first_token, prefix + "decode": decode,
                          prefix + "answer": first_token + decode})
    return estimated


def kv_cache_bytes_per_layer(llm: nn.Module, rows: int, tokens: int) -> int:
    """Bytes of one decoder layer's cached keys and values for ``rows`` sequences of ``tokens``."""
    config = llm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(llm.parameters()).element_size()
    return 2 * rows * tokens * config.num_key_value_heads * head_dim * element


def extrapolate_memory(phase_peaks: dict[str, int], kv_bytes_per_layer: int, llm_depth: int) -> dict[str, int]:
    """Peak live tensor bytes per phase at full LLM depth: + (depth - 1) layers of KV cache in LLM phases."""
    return {phase: peak + (llm_depth - 1) * kv_bytes_per_layer * (phase in LLM_PHASES)
            for phase, peak in phase_peaks.items()}


def full_depth_weight_bytes(model: MiniCPMV, depths: dict[str, int]) -> int:
    """Parameter bytes of ``model`` with its one tower and one LLM layer repeated to ``depths``."""
    def nbytes(module: nn.Module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    layers = sampled_layers(model)
    return nbytes(model) + sum((depths[block] - 1) * nbytes(layer) for block, layer in layers.items())


def full_depth_memory(model: MiniCPMV, batch: MultimodalBatch, new_tokens: int, chunk_frames: int | None,
                      depths: dict[str, int]) -> dict:
    """Estimated inference memory above weights and input of one answer at full depth (module docstring).

    Measured in this process: live tensor bytes do not depend on what ran before (unlike RSS).
    """
    previous, model.visual_chunk_frames = model.visual_chunk_frames, chunk_frames
    try:
        with LiveTensorBytes([*model.parameters(), batch.patches, batch.input_ids, batch.attention_mask]) as probe:
            answer(model, batch, new_tokens, probe)
    finally:
        model.visual_chunk_frames = previous
    rows, prompt = batch.input_ids.shape
    kv = kv_cache_bytes_per_layer(model.llm, rows, prompt + new_tokens - 1)  # the last token is never fed
    phases = extrapolate_memory(probe.phase_peaks, kv, depths["llm"])
    peak_phase = max(phases, key=phases.get)
    return {"tensor_bytes": phases[peak_phase], "tensor_peak_phase": peak_phase, "tensor_phase_bytes": phases,
            "one_layer_tensor_bytes": probe.peak, "kv_bytes_per_layer": kv,
            "weights_bytes": full_depth_weight_bytes(model, depths)}
