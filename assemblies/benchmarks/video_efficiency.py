"""Video efficiency: the 3-D resampler against a 2-D resampler and a Qwen2.5-VL-style patch merger.

The paper's headline: on Video-MME, MiniCPM-V 4.5 needs 46.7% of the GPU memory and 8.7% of the time
of Qwen2.5-VL 7B. The mechanism is the 3-D resampler: 64 LLM tokens per group of up to 6 frames.
Here one video (``frames`` frames of ``frame_px``^2, random pixels: compute does not depend on them)
and one question go through the SAME vision tower and the SAME Qwen3 with three resampler slots:

- ``resampler3d`` (a): 64 tokens per 6-frame group, 64 * ceil(f/6);
- ``resampler2d`` (b): 64 tokens per frame (MiniCPM-V <= 4.0), 64 * f;
- ``patch_merger`` (c): Qwen2.5-VL's 2 x 2 patches x 2 frames per token, (H/28) * (W/28) * ceil(f/2).

Every call is ``MiniCPMV.generate``: greedy, KV-cached, exactly ``new_tokens`` new tokens.

- Time: all variants in this process, interleaved repeat by repeat in a rotating order, so the load
  of a shared machine hits them alike; medians and min-max over repeats. Forward hooks split one
  generate call into tower, resampler, LLM prefill (the first LLM call) and decode (the rest,
  with the decoding loop's own overhead).
- Memory: each (variant, frames) in a fresh subprocess, so no allocator cache from another run
  hides a peak. ``rss`` is the peak resident memory above the level after imports, model build and
  input (``measure.PeakRSS``): the inference memory on top of the weights, which is what changes
  between the variants of the paper's comparison (the GPU figures there add the same weights).
  ``tensors`` is the peak of live tensor bytes (``measure.LiveTensorBytes``), the CPU analogue of
  ``torch.cuda.max_memory_allocated``, with the phase that set it.
- Layer-sampled scales (``LAYER_SAMPLED``, e.g. ``released``): the released widths with one tower
  layer and one LLM layer; the same calls time those layers and report seconds and memory
  extrapolated to full depth (``video_efficiency_depth`` says how and what that assumes).
- FLOPs: counted with ``torch.utils.flop_counter`` on meta-device models (nothing is computed), at
  this scale and at the released size, to show how far the CPU scale's split carries over.

    python tasks/benchmark.py names=[video_efficiency]
    python tasks/benchmark.py names=[video_efficiency] +kwargs.video_efficiency.frames=[18] \
        +kwargs.video_efficiency.repeats=5
    python tasks/benchmark.py names=[video_efficiency] +kwargs.video_efficiency.scale=released
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from functools import partial
from typing import Sequence

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from assemblies.benchmarks.measure import LiveTensorBytes, PeakRSS
from assemblies.benchmarks.video_efficiency_clock import answer
from assemblies.benchmarks.video_efficiency_depth import extrapolate_seconds, full_depth_memory, sampled_layers
from assemblies.benchmarks.video_efficiency_tables import print_tables
from assemblies.mllm import MiniCPMV
from assemblies.presets import REPO_ROOT, compose_config
from blocks.batch import IGNORE_INDEX, MultimodalBatch, Sample, collate

# conf/resampler option -> frames per group, in table order; the last is the reference (c).
VARIANTS = {"resampler3d": 6, "resampler2d": 1, "patch_merger": 2}
REFERENCE = "patch_merger"
# (conf/scale, dims overrides). "cpu": MiniCPM-V 4.5 at a quarter of the width (tower 288 = 1152/4,
# Qwen3 1024 = 4096/4; head dims, MLP ratios and GQA 4:1 kept) and 2 tower : 3 LLM layers, so that a
# prefill token costs ~15x a tower patch in FLOPs, as in the 8.7B model; vocab 3072 keeps lm_head at
# 9% of the LLM body's weights, as there. "toy" is for tests.
SCALES: dict[str, tuple[str, list[str]]] = {
    "full": ("full", []),
    "cpu": ("full", ["dims.vision_width=288", "dims.vision_depth=2", "dims.vision_heads=4", "dims.vision_mlp=1076",
                     "dims.llm_hidden=1024", "dims.llm_layers=3", "dims.llm_heads=8", "dims.llm_kv_heads=2",
                     "dims.llm_head_dim=128", "dims.llm_mlp=3072", "dims.resampler_heads=8",
                     "dims.vocab_size=3072", "dims.bos_token_id=0", "dims.eos_token_id=1"]),
    "toy": ("tiny", ["dims.queries=64", "dims.eos_token_id=1"]),
    "released": ("full", ["dims.vision_depth=1", "dims.llm_layers=1"]),
    "toy_layer": ("tiny", ["dims.queries=64", "dims.eos_token_id=1", "dims.vision_depth=1", "dims.llm_layers=1"]),
}
# Layer-sampled scales (video_efficiency_depth): one tower layer and one LLM layer at a scale's widths,
# timed and extrapolated to the depths of the scale named here. "released": the 8.7B model's blocks,
# vocabulary included, one layer deep; "toy_layer" is for tests.
LAYER_SAMPLED = {"released": "full", "toy_layer": "toy"}
PATCH_SIZE = 14
PROMPT_HEAD = 3  # "<|im_start|>user\n" before the video; the question and "<|im_start|>assistant\n" follow it
IMAGE_START, IMAGE_END, PLACEHOLDER, FIRST_TEXT_ID = 2, 3, 0, 4


def build_variants(scale: str, device: str = "cpu", variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, MiniCPMV]:
    """One vision tower and one Qwen3 (seeded), shared by a MiniCPMV per resampler slot in ``variants``."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    base, overrides = SCALES[scale]
    configs = {name: compose_config(["+assembly=mcpv45", f"scale={base}", *overrides, f"resampler={name}"])
               for name in variants}
    torch.manual_seed(0)
    with torch.device(device):
        first = configs[variants[0]].model
        vpm, llm = instantiate(first.vision), instantiate(first.llm)
        return {name: MiniCPMV(vpm, instantiate(cfg.model.resampler), llm).eval() for name, cfg in configs.items()}


def full_depths(scale: str) -> dict[str, int]:
    """{"tower": layers, "llm": layers} of a scale's model, from its composed config."""
    base, overrides = SCALES[scale]
    dims = compose_config(["+assembly=mcpv45", f"scale={base}", *overrides]).dims
    return {"tower": int(dims.vision_depth), "llm": int(dims.llm_layers)}


def video_batch(model: MiniCPMV, variant: str, frames: int, frame_px: int = 448, question_tokens: int = 32,
                patch_device: str = "cpu") -> MultimodalBatch:
    """One prompt: chat head, each group's ``<image>`` + placeholders + ``</image>``, then the question.

    Frames are grouped by ``VARIANTS[variant]`` consecutive frames (the last group may be shorter);
    temporal ids are 2 fps in the official 0.1 s units. Patches are random (seeded).
    """
    if frame_px % (2 * PATCH_SIZE):
        raise ValueError(f"frame_px must be a multiple of {2 * PATCH_SIZE}, got {frame_px}")
    side, per_group = frame_px // PATCH_SIZE, VARIANTS[variant]
    group_sizes = [min(per_group, frames - first) for first in range(0, frames, per_group)]
    generator = torch.Generator().manual_seed(frames)
    vocab = model.llm.config.vocab_size
    text = partial(torch.randint, FIRST_TEXT_ID, vocab, generator=generator)
    pieces, bounds, length = [text((PROMPT_HEAD,))], [], PROMPT_HEAD
    for size in group_sizes:
        count = model.resampler.tokens_per_group([(side, side)] * size)
        pieces.append(torch.tensor([IMAGE_START] + [PLACEHOLDER] * count + [IMAGE_END]))
        bounds.append((length + 1, length + 1 + count))
        length += count + 2
    pieces.append(text((question_tokens,)))
    input_ids = torch.cat(pieces)
    patches = torch.randn(frames * side * side, 3 * PATCH_SIZE ** 2, generator=generator)
    sample = Sample(input_ids=input_ids, labels=torch.full_like(input_ids, IGNORE_INDEX),
                    patches=patches.to(patch_device), tgt_sizes=torch.tensor([[side, side]] * frames),
                    temporal_ids=torch.arange(frames) * 5, group_sizes=torch.tensor(group_sizes),
                    image_bound=torch.tensor(bounds), sample_id=f"{variant}@{frames}")
    return collate([sample], pad_id=PLACEHOLDER)


def visual_tokens(batch: MultimodalBatch) -> int:
    return int((batch.image_bound[:, 2] - batch.image_bound[:, 1]).sum())


def peak_memory(scale: str, variant: str, frames: int, frame_px: int, question_tokens: int, new_tokens: int,
                threads: int, chunk_frames: int | None = None) -> dict:
    """Peak memory of one answer, for a fresh process: RSS above the built model and input, live tensors.

    ``chunk_frames``: ``MiniCPMV.visual_chunk_frames`` (None: the whole video through tower and resampler at once).

    A one-frame, one-token answer first does the lazy initialisation (kernels, thread pools, imports
    inside ``generate``) that would otherwise land in the first measured answer's RSS.
    """
    torch.set_num_threads(threads)
    model = build_variants(scale, variants=[variant])[variant]
    model.visual_chunk_frames = chunk_frames
    answer(model, video_batch(model, variant, 1, frame_px, question_tokens), 1)
    batch = video_batch(model, variant, frames, frame_px, question_tokens)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    inputs = [batch.patches, batch.input_ids, batch.attention_mask]
    with PeakRSS() as rss, LiveTensorBytes([*model.parameters(), *inputs]) as probe:
        answer(model, batch, new_tokens, probe)
    return {"rss_bytes": rss.peak, "tensor_bytes": probe.peak, "weights_bytes": weights,
            "tensor_peak_phase": max(probe.phase_peaks, key=probe.phase_peaks.get),
            "tensor_phase_bytes": probe.phase_peaks}


def peak_memory_in_subprocess(**kwargs) -> dict:
    """``peak_memory(**kwargs)`` in a fresh Python process (the last stdout line is its JSON)."""
    code = ("import json, sys; from assemblies.benchmarks.video_efficiency import peak_memory; "
            "print(json.dumps(peak_memory(**json.loads(sys.argv[1]))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"memory subprocess for {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_flops(scale: str, frames: int, frame_px: int, question_tokens: int) -> dict[str, dict[str, float]]:
    """GFLOPs of tower, resampler and LLM prefill per variant, counted on meta-device models."""
    flops = {}
    for variant, model in build_variants(scale, device="meta").items():
        batch = video_batch(model, variant, frames, frame_px, question_tokens, patch_device="meta")
        counted = {}
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                features = model.vpm(batch.patches, batch.tgt_sizes)
            counted["tower"] = counter.get_total_flops()
            with FlopCounterMode(display=False) as counter:
                model.resampler(features, batch.tgt_sizes, batch.temporal_ids, batch.group_sizes)
            counted["resampler"] = counter.get_total_flops()
            embeds = torch.empty(1, batch.input_ids.shape[1], model.llm.config.hidden_size, device="meta")
            with FlopCounterMode(display=False) as counter:
                model.llm(inputs_embeds=embeds, logits_to_keep=1)  # generate's prefill keeps one row of logits
            counted["prefill"] = counter.get_total_flops()
        flops[variant] = {phase: value / 1e9 for phase, value in counted.items()}
    return flops


def memory_label(chunk_frames: int | None) -> str:
    return "whole video" if chunk_frames is None else f"{chunk_frames}-frame chunks"


def _median_and_range(values: list[float]) -> tuple[float, list[float]]:
    return statistics.median(values), [min(values), max(values)]


def _cpu_model() -> str:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def _timing_row(runs: list[dict], reference: list[dict]) -> dict:
    """Median and range of each phase's seconds, and of its per-repeat ratio to the reference's."""
    row: dict = {"seconds": {}, "seconds_range": {}, "ratios": {}, "ratio_ranges": {}}
    for phase in runs[0]:
        row["seconds"][phase], row["seconds_range"][phase] = _median_and_range([r[phase] for r in runs])
        if phase in reference[0]:
            row["ratios"][phase], row["ratio_ranges"][phase] = _median_and_range(
                [r[phase] / ref[phase] for r, ref in zip(runs, reference)])
    return row


def run(frames: Sequence[int] | None = None, repeats: int | None = None, new_tokens: int = 64, scale: str = "cpu",
        frame_px: int = 448, question_tokens: int = 32, memory_chunks: Sequence[int | None] = (None, 6),
        flop_scales: Sequence[str] = ("cpu", "full")) -> dict:
    """Time, measure and count the three variants on one video per frame count; print the tables.

    Args:
        frames: frame counts of the video (one run per count and variant); default (6, 18, 36, 60),
            (6, 18, 60) for a layer-sampled scale.
        repeats: interleaved timed repeats (after one warm-up answer per variant); medians reported.
            Default 3, 2 for a layer-sampled scale.
        new_tokens: tokens every answer decodes (greedy, forced: no early end).
        scale: a key of ``SCALES`` for the timed and measured models. A key of ``LAYER_SAMPLED``
            reports seconds and memory extrapolated to full depth (``video_efficiency_depth``); the
            one-layer measurements are kept under ``one_layer``.
        frame_px: frame side in pixels (a multiple of 28).
        question_tokens: text tokens after the video (the question and the assistant turn's head).
        memory_chunks: visual encodings whose peak memory is measured per (variant, frames), each in a
            fresh subprocess: None = the whole video at once (how timing runs), n = chunks of n frames.
            Layer-sampled: live tensors only, in this process (no RSS: a fresh process per
            measurement would build the big model again each time).
        flop_scales: scales whose FLOPs are counted on the meta device.

    Returns:
        Figures: per frame count and variant the token counts, seconds per phase (median and range),
        memory, and ratios to ``patch_merger`` (median and range of the per-repeat ratios); FLOPs.
    """
    depths = full_depths(LAYER_SAMPLED[scale]) if scale in LAYER_SAMPLED else None
    frames = tuple(frames or ((6, 18, 60) if depths else (6, 18, 36, 60)))
    repeats = repeats or (2 if depths else 3)
    models = build_variants(scale)
    layers = {variant: sampled_layers(model) for variant, model in models.items()} if depths else {}
    batches = {(f, v): video_batch(models[v], v, f, frame_px, question_tokens) for f in frames for v in VARIANTS}
    names = list(VARIANTS)
    for variant in names:  # warm-up: lazy initialisation, thread pools
        answer(models[variant], batches[(min(frames), variant)], new_tokens)
    seconds: dict[tuple[int, str], list[dict]] = {key: [] for key in batches}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for f in frames:
            for variant in order:
                seconds[(f, variant)].append(answer(models[variant], batches[(f, variant)], new_tokens,
                                                    layers=layers.get(variant)))
                print(f"  repeat {repeat + 1}/{repeats}, {f} frames, {variant}: "
                      f"{seconds[(f, variant)][-1]['answer']:.2f} s measured", flush=True)
    estimated = {key: [extrapolate_seconds(r, depths) for r in runs] if depths else runs for key, runs in seconds.items()}
    figures: dict = {"scale": scale, "depths": depths, "frame_px": frame_px, "question_tokens": question_tokens,
                     "new_tokens": new_tokens, "repeats": repeats, "threads": torch.get_num_threads(),
                     "cpu_model": _cpu_model(), "frames": {}, "flops": {}}
    for f in frames:
        rows = figures["frames"][str(f)] = {}
        for variant in names:
            batch = batches[(f, variant)]
            row = rows[variant] = {"visual_tokens": visual_tokens(batch), "prompt_tokens": int(batch.input_ids.shape[1]),
                                   **_timing_row(estimated[(f, variant)], estimated[(f, REFERENCE)])}
            if depths:
                row["one_layer"] = _timing_row(seconds[(f, variant)], seconds[(f, REFERENCE)])["seconds"]
                row["memory"] = {memory_label(chunk): full_depth_memory(models[variant], batch, new_tokens, chunk, depths)
                                 for chunk in memory_chunks}
            else:
                row["memory"] = {memory_label(chunk): peak_memory_in_subprocess(
                    scale=scale, variant=variant, frames=f, frame_px=frame_px, question_tokens=question_tokens,
                    new_tokens=new_tokens, threads=torch.get_num_threads(), chunk_frames=chunk)
                    for chunk in memory_chunks}
        for variant in names:
            row, ref = rows[variant], rows[REFERENCE]
            for key in ("visual_tokens", "prompt_tokens"):
                row["ratios"][key] = row[key] / ref[key]
            for label, measured in row["memory"].items():
                for key in ("rss_bytes", "tensor_bytes"):
                    if key in measured:
                        measured[key.replace("bytes", "ratio")] = measured[key] / ref["memory"][label][key]
    for flop_scale in flop_scales:
        figures["flops"][flop_scale] = {str(f): count_flops(flop_scale, f, frame_px, question_tokens) for f in frames}
    print_tables(figures)
    return figures
