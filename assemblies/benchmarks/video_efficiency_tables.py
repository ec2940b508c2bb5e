"""The printed tables of the video-efficiency benchmark (``video_efficiency.run`` figures in, text out)."""

from __future__ import annotations

from typing import Callable

MIB = 2 ** 20
PHASES = ("tower", "resampler", "prefill", "decode")


def _ratio(row: dict, key: str) -> str:
    low, high = row["ratio_ranges"].get(key, (None, None))
    spread = f" [{low:.2f}-{high:.2f}]" if low is not None else ""
    return f"{row['ratios'][key]:.3f}{spread}"


def variants_table(figures: dict, frames: str) -> list[str]:
    """Tokens, prefill time, time to the first token and to the answer per variant, with ratios to (c)."""
    rows = figures["frames"][frames]
    lines = [f"{frames} frames of {figures['frame_px']}^2, {figures['question_tokens']} question tokens, "
             f"{figures['new_tokens']} new tokens; median of {figures['repeats']} interleaved repeats; "
             f"x(c) = ratio to patch_merger [min-max of the per-repeat ratios]",
             f"{'variant':<13}{'visual':>7}{'x(c)':>7}{'prompt':>7}{'x(c)':>7}{'prefill s':>10}{'x(c)':>19}"
             f"{'1st token s':>12}{'x(c)':>19}{'answer s':>9}{'x(c)':>19}{'answer cpu-s':>13}{'x(c)':>19}"]
    for variant, row in rows.items():
        s = row["seconds"]
        line = (f"{variant:<13}{row['visual_tokens']:>7}{row['ratios']['visual_tokens']:>7.3f}"
                f"{row['prompt_tokens']:>7}{row['ratios']['prompt_tokens']:>7.3f}"
                f"{s['prefill']:>10.3f}{_ratio(row, 'prefill'):>19}{s['first_token']:>12.2f}"
                f"{_ratio(row, 'first_token'):>19}{s['answer']:>9.2f}{_ratio(row, 'answer'):>19}"
                f"{s['cpu_answer']:>13.2f}{_ratio(row, 'cpu_answer'):>19}")
        lines.append(line)
    return lines


def _memory_ratio_key(measured: dict) -> str:
    """RSS when measured (fresh processes), else live tensors (layer-sampled: estimated at full depth)."""
    return "rss_ratio" if "rss_ratio" in measured else "tensor_ratio"


def memory_table(figures: dict, frames: str) -> list[str]:
    """Peak memory above the weights per variant and visual encoding, with ratios to (c)."""
    if figures.get("depths"):
        title = (f"peak memory of one answer at {frames} frames, above weights and input, estimated at full "
                 f"depth: one-layer live tensors + {figures['depths']['llm'] - 1} layers of KV cache")
    else:
        title = f"peak memory of one answer at {frames} frames, above weights and input (fresh process each)"
    lines = [title, f"{'variant':<13}{'encoding':<18}{'rss MiB':>9}{'x(c)':>7}{'tensors MiB':>12}{'x(c)':>7}"
                    f"  {'peak set in':<11}{'weights MiB':>12}"]
    for variant, row in figures["frames"][frames].items():
        for label, m in row.get("memory", {}).items():
            rss = f"{m['rss_bytes'] / MIB:>9.0f}{m['rss_ratio']:>7.2f}" if "rss_bytes" in m else f"{'-':>9}{'-':>7}"
            lines.append(f"{variant:<13}{label:<18}{rss}{m['tensor_bytes'] / MIB:>12.0f}{m['tensor_ratio']:>7.2f}"
                         f"  {m['tensor_peak_phase']:<11}{m['weights_bytes'] / MIB:>12.0f}")
    return lines


def _phase_lines(figures: dict, frames: str, title: str, source: str, cell: Callable[[dict, str, str], str],
                 width: int) -> list[str]:
    """One line per variant and clock: ``cell(row[source], clock prefix, phase)`` per phase, then the answer's s."""
    lines = [title, f"{'variant':<13}{'clock':<6}" + "".join(f"{phase:>{width}}" for phase in PHASES) + f"{'answer':>9}"]
    for variant, row in figures["frames"][frames].items():
        for clock, prefix in (("wall", ""), ("cpu", "cpu_")):
            s = row[source]
            lines.append(f"{variant:<13}{clock:<6}" + "".join(f"{cell(s, prefix, p):>{width}}" for p in PHASES)
                         + f"{s[prefix + 'answer']:>9.2f}")
    return lines


def one_layer_table(figures: dict, frames: str) -> list[str]:
    """What a layer-sampled run measured: each phase of the one-layer model and its layer's share."""
    def cell(s: dict, prefix: str, phase: str) -> str:
        layer = prefix + phase + "_layer"
        return f"{s[prefix + phase]:.3f} " + (f"[{s[layer]:>7.3f}]" if layer in s else " " * 9)

    return _phase_lines(figures, frames, f"measured on the one-layer model at {frames} frames (median s): "
                        "phase [its one layer]", "one_layer", cell, 20)


def time_split_table(figures: dict, frames: str) -> list[str]:
    """Median seconds per phase and its share of the answer time, wall clock and process CPU time."""
    def cell(s: dict, prefix: str, phase: str) -> str:
        return f"{s[prefix + phase]:.3f} ({100 * s[prefix + phase] / s[prefix + 'answer']:>3.0f}%)"

    return _phase_lines(figures, frames, f"where the time goes at {frames} frames (median s, % of the answer)",
                        "seconds", cell, 17)


def sweep_table(figures: dict) -> list[str]:
    """Ratios of each variant to (c) as the video grows."""
    first = next(iter(next(iter(figures["frames"].values())).values())).get("memory", {})
    labels = {label: _memory_ratio_key(measured) for label, measured in first.items()}
    lines = ["ratios to patch_merger as frames grow (time: median of per-repeat ratios; memory: "
             + ("estimated tensors at full depth)" if figures.get("depths") else "rss)"),
             f"{'frames':>6} {'variant':<13}{'visual':>8}{'prefill':>9}{'1st token':>10}{'1st tok cpu':>12}"
             f"{'answer':>8}{'answer cpu':>11}" + "".join(f"{'memory, ' + label:>24}" for label in labels)]
    for frames, rows in figures["frames"].items():
        for variant, row in rows.items():
            if variant == "patch_merger":
                continue
            r = row["ratios"]
            lines.append(f"{frames:>6} {variant:<13}{r['visual_tokens']:>8.3f}{r['prefill']:>9.3f}"
                         f"{r['first_token']:>10.3f}{r['cpu_first_token']:>12.3f}{r['answer']:>8.3f}{r['cpu_answer']:>11.3f}"
                         + "".join(f"{row['memory'][label][key]:>24.2f}" for label, key in labels.items()))
    return lines


def flops_table(figures: dict) -> list[str]:
    """GFLOPs up to the first token per scale, frame count and variant, with the total's ratio to (c)."""
    lines = ["GFLOPs to the first token, counted on meta-device models (attention counted dense)",
             f"{'scale':<6}{'frames':>7} {'variant':<13}{'tower':>10}{'resampler':>10}{'prefill':>10}{'total':>10}{'x(c)':>7}"]
    for scale, by_frames in figures["flops"].items():
        for frames, by_variant in by_frames.items():
            reference = sum(by_variant["patch_merger"].values())
            for variant, counts in by_variant.items():
                total = sum(counts.values())
                lines.append(f"{scale:<6}{frames:>7} {variant:<13}{counts['tower']:>10.4g}{counts['resampler']:>10.4g}"
                             f"{counts['prefill']:>10.4g}{total:>10.4g}{total / reference:>7.2f}")
    return lines


def print_tables(figures: dict) -> None:
    """All tables of a ``video_efficiency.run`` result."""
    print(f"video efficiency, scale={figures['scale']}, {figures['threads']} threads, {figures['cpu_model']}")
    if figures.get("depths"):
        print(f"layer-sampled: one tower layer and one LLM layer timed; seconds and memory below are estimated "
              f"at tower depth {figures['depths']['tower']}, LLM depth {figures['depths']['llm']}")
    blocks = [block for frames, rows in figures["frames"].items()
              for block in (variants_table(figures, frames), time_split_table(figures, frames),
                            one_layer_table(figures, frames) if figures.get("depths") else [],
                            memory_table(figures, frames) if any(row["memory"] for row in rows.values()) else [])
              if block]
    blocks.append(sweep_table(figures))
    if figures["flops"]:
        blocks.append(flops_table(figures))
    print("\n\n".join("\n".join(block) for block in blocks))
