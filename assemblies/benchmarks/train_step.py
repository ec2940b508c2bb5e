"""Training-step speed: tokens/s and model FLOPs utilisation (MFU) against this machine's fp32 peak.

The model is the mcpv45 topology at ~70M parameters (LLM width 768, 8 layers; a small vision tower
and resampler). FLOPs per step are counted once with ``torch.utils.flop_counter`` (matmuls and
attention, forward + backward); the peak is the best fp32 matmul throughput measured in the same
process with the same threads, so MFU = counted FLOPs / step time / measured peak.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from assemblies.presets import mcpv45
from blocks.batch import Sample, collate

SIZE = ["dims.llm_hidden=768", "dims.llm_layers=8", "dims.llm_heads=12", "dims.llm_kv_heads=4", "dims.llm_head_dim=64",
        "dims.llm_mlp=2048", "dims.vision_width=256", "dims.vision_depth=2", "dims.vision_heads=4",
        "dims.vision_mlp=1024", "dims.resampler_heads=4", "dims.queries=64"]


def matmul_peak_flops(size: int = 1536, repeats: int = 8) -> float:
    """Best fp32 FLOP/s of a square matmul on this machine (the MFU denominator)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _batch(batch_size: int, text_tokens: int, image_patches: tuple[int, int], tokens_per_image: int,
           vocab: int) -> object:
    """Random samples: one image of ``image_patches`` patches, its placeholders, then text; all labelled."""
    h, w = image_patches
    samples = []
    for i in range(batch_size):
        ids = torch.randint(10, vocab, (tokens_per_image + text_tokens + 2,))
        samples.append(Sample(input_ids=ids, labels=ids.clone(), patches=torch.randn(h * w, 3 * 14 * 14),
                              tgt_sizes=torch.tensor([[h, w]]), temporal_ids=torch.tensor([-1]),
                              group_sizes=torch.tensor([1]), image_bound=torch.tensor([[1, 1 + tokens_per_image]]),
                              sample_id=str(i)))
    return collate(samples, pad_id=0)


def run(batch_size: int = 4, text_tokens: int = 192, image_patches: tuple[int, int] = (16, 16), steps: int = 3,
        threads: int | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Time ``steps`` AdamW training steps of the ~70M model; returns tokens/s, FLOPs and MFU.

    Args:
        batch_size: samples per step.
        text_tokens: text tokens per sample (besides the 64 visual tokens).
        image_patches: patch grid (rows, cols) of each sample's image.
        steps: timed steps (after one warm-up step).
        threads: torch threads (default: torch's).
        overrides: extra Hydra overrides of the model size.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = mcpv45("tiny", [*SIZE, *overrides], device="cpu")
    params = sum(p.numel() for p in model.parameters())
    batch = _batch(batch_size, text_tokens, tuple(image_patches), model.resampler.tokens_per_group([image_patches]),
                   model.llm.config.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    flops = counter.get_total_flops()
    # The peak is measured before and after the timed steps and the higher kept: on a shared machine
    # this errs towards a lower (more conservative) MFU.
    peak_before = matmul_peak_flops()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak = max(peak_before, matmul_peak_flops())
    tokens = int(batch.attention_mask.sum())
    figures = {"params": params, "threads": torch.get_num_threads(), "tokens_per_step": tokens,
               "step_s": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
               "model_gflop_per_step": round(flops / 1e9, 1), "achieved_gflops": round(flops / seconds / 1e9, 1),
               "peak_fp32_matmul_gflops": round(peak / 1e9, 1), "mfu": round(flops / seconds / peak, 3)}
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    return figures
