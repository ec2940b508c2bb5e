"""The resampler packing benchmark: its memory probe counts bytes right, and a tiny run reports sane figures."""

import pytest
import torch

from assemblies.benchmarks.measure import LiveTensorBytes
from assemblies.benchmarks.resampler_packing import run


def test_live_tensor_bytes_tracks_the_peak_of_live_storages():
    kept = torch.zeros(10)
    with LiveTensorBytes([kept]) as probe:
        a = torch.ones(1000)      # 4,000 B
        b = a * 2                 # 8,000 B live
        view = b[:10]             # a view: no new storage
        del a
        c = b + 1                 # 8,000 B live again (a was freed)
        kept.add_(1)              # in-place on a pre-existing tensor: not counted
        del b, c, view
    assert probe.peak == 8000
    probe.release_expired()
    assert probe.current == 0


@pytest.mark.slow
def test_tiny_run_reports_consistent_figures(capsys):
    figures = run(repeats=1, scale="tiny", device="cpu")
    assert figures["patches"] == 1024 * 2 + 960 + 448 + 6 * 1024
    assert figures["padded_key_rows"] == 5 * 6 * 1024  # 5 groups padded to 6 frames of the longest slice
    assert figures["max_abs_diff"] < 1e-5
    # Byte counts are deterministic: the padded path holds ~3x the key rows.
    assert figures["memory_ratio_forward"] < 0.5
    assert figures["memory_ratio_train"] < 0.5
    assert all(figures[f"seconds_{k}_{p}"] > 0 for k in ("forward", "train") for p in ("packed", "padded"))
    assert "forward+backward" in capsys.readouterr().out


def test_unknown_scale_is_rejected():
    with pytest.raises(ValueError, match="unknown scale"):
        run(scale="huge")
