"""Smoke test of the vision packing benchmark at tiny scale: figures present and consistent."""

from __future__ import annotations

from assemblies.benchmarks.vision_packing import run


def test_tiny_run_reports_consistent_figures(capsys):
    figures = run(repeats=1, scale="tiny", depth=1, train=True, device="cpu")
    assert (figures["patches"], figures["slices"], figures["padded_rows"]) == (4480, 8, 8192)
    assert figures["max_abs_diff"] < 1e-4
    for kind in ("forward", "train"):
        for path in ("packed", "padded"):
            assert figures[f"seconds_{kind}_{path}"] > 0 and figures[f"peak_bytes_{kind}_{path}"] > 0
    # padded activations hold 8192 rows instead of 4480, so the probe must see less for packed
    assert figures["memory_ratio_forward"] < 0.9 and figures["memory_ratio_train"] < 0.9
    assert "forward+backward" in capsys.readouterr().out
