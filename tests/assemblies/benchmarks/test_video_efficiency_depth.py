"""Layer-sampled video efficiency: depth extrapolation, the layer clocks, the released scale (toy and meta)."""

import time

import pytest
import torch
from transformers import DynamicCache

from assemblies.benchmarks.video_efficiency import build_variants, full_depths, run, video_batch
from assemblies.benchmarks.video_efficiency_clock import answer
from assemblies.benchmarks.video_efficiency_depth import (extrapolate_memory, extrapolate_seconds,
                                                          kv_cache_bytes_per_layer, sampled_layers)
from blocks.generation.engine import cache_keyword

TOY = dict(frame_px=112, question_tokens=32)


def test_seconds_extrapolate_each_phase_by_its_layer_time_and_block_depth():
    measured = {"tower": 3.0, "resampler": 2.0, "prefill": 1.5, "first_token": 7.0, "decode": 4.0, "answer": 11.0,
                "tower_layer": 0.1, "prefill_layer": 1.0, "decode_layer": 0.5}
    seconds = {**measured, **{"cpu_" + key: 2 * value for key, value in measured.items()}}
    estimated = extrapolate_seconds(seconds, {"tower": 27, "llm": 36})
    expected = {"tower": 3.0 + 26 * 0.1, "resampler": 2.0, "prefill": 1.5 + 35 * 1.0,
                "first_token": 7.0 + 2.6 + 35.0, "decode": 4.0 + 35 * 0.5, "answer": 7.0 + 2.6 + 35.0 + 4.0 + 17.5}
    assert estimated == pytest.approx({**expected, **{"cpu_" + key: 2 * value for key, value in expected.items()}})


def test_memory_adds_the_other_layers_kv_cache_to_the_llm_phases_only():
    peaks = {"glue": 10, "tower": 100, "resampler": 50, "prefill": 60, "decode": 30}
    assert extrapolate_memory(peaks, kv_bytes_per_layer=5, llm_depth=36) == {
        "glue": 10 + 175, "tower": 100, "resampler": 50, "prefill": 60 + 175, "decode": 30 + 175}


def test_kv_bytes_per_layer_match_the_cache_a_forward_fills():
    llm = build_variants("toy_layer", variants=["resampler3d"])["resampler3d"].llm
    cache = DynamicCache()
    llm(inputs_embeds=torch.randn(2, 9, llm.config.hidden_size), use_cache=True, **{cache_keyword(llm): cache})
    layer = cache.layers[0]
    assert kv_cache_bytes_per_layer(llm, rows=2, tokens=9) == layer.keys.nbytes + layer.values.nbytes


def _sleep_after_forward(module: torch.nn.Module, seconds: float):
    return module.register_forward_hook(lambda *_: time.sleep(seconds))


def test_layer_clocks_find_the_one_layer_of_each_block_and_count_it_in_its_phase():
    model = build_variants("toy_layer", variants=["resampler3d"])["resampler3d"]
    layers = sampled_layers(model)
    assert layers["tower"] is model.vpm.encoder.layers[0]
    assert layers["llm"] is model.llm.model.layers[0]
    # a known delay inside each layer (wall clock only) must show in the layer's and its phase's time
    handles = [_sleep_after_forward(layers["tower"], 0.2), _sleep_after_forward(layers["llm"], 0.1)]
    try:
        seconds = answer(model, video_batch(model, "resampler3d", 6, **TOY), new_tokens=3, layers=layers)
    finally:
        for handle in handles:
            handle.remove()
    assert seconds["tower"] >= seconds["tower_layer"] >= 0.2
    assert seconds["prefill"] >= seconds["prefill_layer"] >= 0.1
    assert seconds["decode"] >= seconds["decode_layer"] >= 2 * 0.1  # two decode calls after the prefill
    assert all(seconds[f"cpu_{phase}_layer"] <= seconds[f"cpu_{phase}"] for phase in ("tower", "prefill", "decode"))


def test_a_deeper_model_is_refused_for_layer_sampling():
    model = build_variants("toy", variants=["resampler3d"])["resampler3d"]
    with pytest.raises(ValueError, match="exactly one tower layer, found 2"):
        sampled_layers(model)


def test_released_scale_has_the_full_widths_one_layer_deep_and_extrapolates_to_the_full_depths():
    model = build_variants("released", device="meta", variants=["resampler3d"])["resampler3d"]
    assert all(p.is_meta for p in model.parameters())
    layers = sampled_layers(model)
    assert layers["tower"].self_attn.q_proj.weight.shape == (1152, 1152)
    assert layers["tower"].mlp.fc1.weight.shape == (4304, 1152)
    config = model.llm.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size) == (
        1, 4096, 12288, 151748)
    assert model.llm.lm_head.weight.shape == (151748, 4096)
    assert full_depths("released") == {"tower": 1, "llm": 1}
    assert full_depths("full") == {"tower": 27, "llm": 36}


def test_toy_layer_sampled_run_reports_the_extrapolated_figures(capsys):
    figures = run(frames=(2,), repeats=1, new_tokens=2, scale="toy_layer", memory_chunks=(6,), flop_scales=(), **TOY)
    assert figures["depths"] == full_depths("toy") == {"tower": 2, "llm": 2}
    for variant, row in figures["frames"]["2"].items():
        assert row["seconds"] == pytest.approx(extrapolate_seconds(row["one_layer"], figures["depths"]))
        memory = row["memory"]["6-frame chunks"]
        assert "rss_bytes" not in memory  # no fresh process per measurement in this mode
        assert memory["tensor_bytes"] >= memory["one_layer_tensor_bytes"] > 0
        assert memory["tensor_phase_bytes"]["decode"] > memory["kv_bytes_per_layer"] > 0
    out = capsys.readouterr().out
    assert "estimated at tower depth 2, LLM depth 2" in out
    assert "measured on the one-layer model" in out
