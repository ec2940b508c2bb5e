"""LR schedules: WSD phases and end points, cosine end points, per-group ratios kept."""

from __future__ import annotations

import pytest
import torch

from assemblies.training.schedules import cosine, cosine_multiplier, wsd, wsd_multiplier


def test_wsd_warms_up_holds_then_decays_to_min_ratio():
    total = 100
    values = [wsd_multiplier(s, total, warmup=10, decay=0.2, min_ratio=0.2) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(v == 1.0 for v in values[10:80])           # stable plateau
    assert values[80] < 1.0 and values[-1] == pytest.approx(0.2)  # linear decay to 5e-5 -> 1e-5
    assert all(a >= b for a, b in zip(values[80:], values[81:]))


def test_cosine_reaches_min_ratio_and_fraction_warmup():
    total = 50
    assert cosine_multiplier(0, total, warmup=0.1) == pytest.approx(0.2)  # 5 warm-up steps
    assert cosine_multiplier(total - 1, total, warmup=0.1, min_ratio=0.1) == pytest.approx(0.1)


def test_scheduler_keeps_per_group_learning_rates_in_ratio():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}])
    for factory in (wsd, cosine):
        scheduler = factory(optimizer, total_steps=20)
        for _ in range(7):
            optimizer.step()
            scheduler.step()
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert lrs[0] / lrs[1] == pytest.approx(10.0)
