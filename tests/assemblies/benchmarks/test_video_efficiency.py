"""The video-efficiency benchmark at toy size: token counts follow each slot's rule, tables, memory probes."""

import math

import pytest
import torch

from assemblies.benchmarks.measure import LiveTensorBytes, PeakRSS
from assemblies.benchmarks.video_efficiency import peak_memory, peak_memory_in_subprocess, run

FRAME_PX = 112  # 8 x 8 patches of 14 px
TOY = dict(scale="toy", frame_px=FRAME_PX, question_tokens=32)


def expected_visual_tokens(variant: str, frames: int) -> int:
    """The analytic counts: 64 per 6-frame group, 64 per frame, one per 2 x 2 patches x 2 frames."""
    side = FRAME_PX // 14 // 2
    return {"resampler3d": 64 * math.ceil(frames / 6), "resampler2d": 64 * frames,
            "patch_merger": side * side * math.ceil(frames / 2)}[variant]


def test_toy_run_counts_tokens_by_each_rule_and_prints_the_tables(capsys):
    figures = run(frames=(7,), repeats=1, new_tokens=2, memory_chunks=(), flop_scales=("toy",), **TOY)
    for frames in (7,):  # a partial last group for both grouped rules
        rows = figures["frames"][str(frames)]
        assert list(rows) == ["resampler3d", "resampler2d", "patch_merger"]
        for variant, row in rows.items():
            assert row["visual_tokens"] == expected_visual_tokens(variant, frames), (variant, frames)
            groups = math.ceil(frames / {"resampler3d": 6, "resampler2d": 1, "patch_merger": 2}[variant])
            assert row["prompt_tokens"] == row["visual_tokens"] + 2 * groups + 3 + 32  # markers, chat head, question
            s = row["seconds"]
            for clock in ("", "cpu_"):
                assert 0 < s[clock + "tower"] + s[clock + "resampler"] + s[clock + "prefill"] <= s[clock + "first_token"]
                assert s[clock + "first_token"] <= s[clock + "answer"]
                assert s[clock + "decode"] == pytest.approx(s[clock + "answer"] - s[clock + "first_token"])
        assert rows["patch_merger"]["ratios"]["answer"] == 1.0
        assert rows["resampler2d"]["ratios"]["visual_tokens"] == 64 * frames / expected_visual_tokens("patch_merger", frames)
        flops = figures["flops"]["toy"][str(frames)]
        assert len({counts["tower"] for counts in flops.values()}) == 1  # one tower for all variants
        assert flops["resampler2d"]["prefill"] > flops["resampler3d"]["prefill"] > flops["patch_merger"]["prefill"]
    out = capsys.readouterr().out
    for column in ("visual", "prompt", "x(c)", "prefill s", "1st token s", "answer s", "answer cpu-s",
                   "where the time goes",
                   "tower", "resampler", "decode", "ratios to patch_merger as frames grow", "GFLOPs"):
        assert column in out, column


def test_peak_rss_sees_what_the_block_allocates():
    with PeakRSS() as held:
        block = torch.ones(50_000_000)  # 200 MB, written
        del block
    with PeakRSS() as idle:
        torch.zeros(10).sum()
    assert held.peak > 190e6
    assert idle.peak < 20e6


def test_live_tensor_bytes_keeps_a_peak_per_phase():
    with LiveTensorBytes([]) as probe:
        probe.phase = "big"
        big = torch.ones(1000)     # 4,000 B
        del big
        probe.phase = "small"
        small = torch.ones(10)     # 40 B; ``big`` is released before it counts
    assert probe.phase_peaks["big"] == 4000
    assert probe.phase_peaks["small"] == 40
    assert probe.peak == 4000
    del small


def test_chunked_encoding_lowers_the_measured_peak_of_a_long_video():
    whole = peak_memory(variant="resampler3d", frames=24, new_tokens=2, threads=1, **TOY)
    chunked = peak_memory(variant="resampler3d", frames=24, new_tokens=2, threads=1, chunk_frames=6, **TOY)
    assert whole["tensor_peak_phase"] in ("tower", "resampler")
    assert chunked["tensor_bytes"] < 0.5 * whole["tensor_bytes"]
    assert whole["weights_bytes"] == chunked["weights_bytes"] > 0
    assert whole["rss_bytes"] > 0


@pytest.mark.slow
def test_memory_subprocess_measures_the_same_tensors_as_in_process():
    kwargs = dict(variant="patch_merger", frames=4, new_tokens=2, threads=1, **TOY)
    assert peak_memory_in_subprocess(**kwargs)["tensor_bytes"] == peak_memory(**kwargs)["tensor_bytes"]
