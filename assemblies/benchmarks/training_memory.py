"""Training memory: ``assemblies.memory``'s estimate (what ``tasks/describe.py`` reports) against the
measured peak of a ~230M-parameter mcpv45 model training on this CPU (fp32, AdamW, every block trainable).

One process, two steps (the first allocates AdamW's state; the second is a run's steady state), peak
resident memory measured by the kernel (``PeakRSS``: everything the process touched from building the
model on). The activations alone are also measured: the tensors alive at the end of a forward pass
(``LiveTensorBytes``), against ``activation_bytes``.
"""

from __future__ import annotations

import torch

from assemblies.benchmarks.measure import LiveTensorBytes, PeakRSS
from assemblies.benchmarks.train_step import _batch
from assemblies.memory import MIB, Stage, activation_bytes, stage_memory
from assemblies.presets import mcpv45

# Qwen3-like LLM (width 1024, 12 layers, 32k vocabulary), a 6-layer SigLIP tower of width 384.
SIZE = ["dims.llm_hidden=1024", "dims.llm_layers=12", "dims.llm_heads=16", "dims.llm_kv_heads=8",
        "dims.llm_head_dim=64", "dims.llm_mlp=3072", "dims.vocab_size=32768", "dims.vision_width=384",
        "dims.vision_depth=6", "dims.vision_heads=6", "dims.vision_mlp=1536", "dims.resampler_heads=8",
        "dims.queries=64"]


def _steps(model: torch.nn.Module, batch, steps: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        optimizer.step()


def _forward_activations(model: torch.nn.Module, batch) -> int:
    """Bytes of the tensors created by a forward pass and alive at its end (what backward will read)."""
    with LiveTensorBytes([*model.parameters(), *(v for v in vars(batch).values() if isinstance(v, torch.Tensor))]) \
            as probe:
        loss = model(batch).loss
        probe.release_expired()
        alive = probe.current
    del loss
    return alive


def run(batch_size: int = 4, text_tokens: int = 192, image_patches: tuple[int, int] = (32, 32), steps: int = 2,
        threads: int | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Estimate vs measured peak memory of ``steps`` AdamW steps of the ~230M model.

    Args:
        batch_size: samples per step, each one image of ``image_patches`` patches and ``text_tokens`` tokens.
        steps: training steps measured (2: the second has the optimizer state from the first).
        threads: torch threads (default: torch's).
        overrides: extra Hydra overrides of the model size.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    with PeakRSS() as rss:
        model = mcpv45("tiny", [*SIZE, *overrides], device="cpu")
        batch = _batch(batch_size, text_tokens, tuple(image_patches),
                       model.resampler.tokens_per_group([tuple(image_patches)]), model.llm.config.vocab_size)
        _steps(model, batch, steps)
    tokens, patches = batch.input_ids.numel(), batch.patches.shape[0]
    states = stage_memory(model, Stage("all", ["vpm", "resampler", "llm"]), "32-true", [1])
    activations = activation_bytes(model, tokens, patches, "32-true")
    measured_activations = _forward_activations(model, batch)
    estimate = states["total"] + activations["total"]
    figures = {"params": model.num_params()["total"], "tokens": tokens, "patches": patches,
               "weights_mib": states["weights"] / MIB, "grads_mib": states["grads"] / MIB,
               "optimizer_mib": states["optimizer"] / MIB,
               **{f"activations_{k}_mib": v / MIB for k, v in activations.items()},
               "measured_activations_mib": measured_activations / MIB,
               "activation_ratio": measured_activations / activations["total"],
               "estimate_peak_mib": estimate / MIB, "measured_peak_rss_mib": rss.peak / MIB,
               "ratio": rss.peak / estimate}
    print(f"{figures['params']:,} parameters, {tokens} LLM tokens (padded), {patches} patches, fp32, AdamW")
    print(f"{'':<44}{'MiB':>10}")
    for label, key in (("weights", "weights_mib"), ("gradients", "grads_mib"), ("AdamW state", "optimizer_mib"),
                       ("activations, estimated", "activations_total_mib"),
                       ("activations, measured (end of forward)", "measured_activations_mib"),
                       ("estimate: weights+grads+optim+activations", "estimate_peak_mib"),
                       ("measured: peak RSS over the run", "measured_peak_rss_mib")):
        print(f"{label:<44}{figures[key]:>10.0f}")
    print(f"measured / estimate = {figures['ratio']:.2f}; activations measured / estimated = "
          f"{figures['activation_ratio']:.2f}")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
