"""Phase clocks of the video-efficiency benchmark: one ``MiniCPMV.generate`` call split by forward hooks.

Phases: tower, resampler, LLM prefill (the first LLM call), decode (the rest, with the decoding loop's
own overhead). With ``layers``, the same call also times given layer modules (the one tower layer and
the one LLM decoder layer of a layer-sampled model) within the phase that runs them.
"""

from __future__ import annotations

import time
from functools import partial

from torch import nn

from assemblies.benchmarks.measure import LiveTensorBytes
from assemblies.mllm import MiniCPMV
from blocks.batch import MultimodalBatch


class PhaseClock:
    """Forward hooks that time one ``generate`` call by phase and name the phase for a memory probe.

    After the block, ``seconds`` holds {tower, resampler, prefill, first_token, decode, answer} in
    wall-clock seconds and the same keys prefixed ``cpu_`` in CPU seconds of this process (all
    threads): on a shared machine the CPU time a step needs varies far less than its wall time.
    Prefill is the first LLM call, first_token everything up to its end, decode the rest.

    ``layers``: modules (by any label) whose forward time is added up per phase that runs them, as
    ``seconds["<phase>_layer"]`` for phase in ``LAYER_PHASES`` (0 where none ran; ``cpu_`` too).
    """

    CLOCKS = {"": time.perf_counter, "cpu_": time.process_time}
    LAYER_PHASES = ("tower", "prefill", "decode")

    def __init__(self, model: MiniCPMV, probe: LiveTensorBytes | None = None,
                 layers: dict[str, nn.Module] | None = None) -> None:
        self.model, self.probe, self.layers = model, probe, layers or {}

    def _now(self) -> dict[str, float]:
        return {prefix: clock() for prefix, clock in self.CLOCKS.items()}

    def _add(self, spans: dict[str, dict[str, float]], phase: str, start: dict[str, float]) -> dict[str, float]:
        now = self._now()
        span = spans.setdefault(phase, dict.fromkeys(self.CLOCKS, 0.0))
        for prefix in self.CLOCKS:
            span[prefix] += now[prefix] - start[prefix]
        return now

    def _enter_phase(self, name: str, *_) -> None:
        if name == "llm":
            name = "decode" if "prefill" in self.spans else "prefill"
        self.phase, self.phase_start = name, self._now()
        if self.probe is not None:
            self.probe.phase = name

    def _leave_phase(self, *_) -> None:
        now = self._add(self.spans, self.phase, self.phase_start)
        if self.phase == "prefill":
            self.first_token_at = now
        if self.probe is not None:
            self.probe.phase = "glue"  # embedding, scatter, sampling between the modules

    def _enter_layer(self, *_) -> None:
        self.layer_start = self._now()

    def _leave_layer(self, *_) -> None:
        self._add(self.layer_spans, self.phase, self.layer_start)

    def __enter__(self) -> "PhaseClock":
        self.spans: dict[str, dict[str, float]] = {}
        self.layer_spans: dict[str, dict[str, float]] = {}
        self.handles = []
        for name, module in (("tower", self.model.vpm), ("resampler", self.model.resampler), ("llm", self.model.llm)):
            self.handles.append(module.register_forward_pre_hook(partial(self._enter_phase, name)))
            self.handles.append(module.register_forward_hook(self._leave_phase))
        for layer in self.layers.values():
            self.handles.append(layer.register_forward_pre_hook(self._enter_layer))
            self.handles.append(layer.register_forward_hook(self._leave_layer))
        if self.probe is not None:
            self.probe.phase = "glue"
        self.started = self._now()
        return self

    def __exit__(self, *exc) -> None:
        ended = self._now()
        for handle in self.handles:
            handle.remove()
        self.seconds = {}
        for prefix in self.CLOCKS:
            first_token = self.first_token_at[prefix] - self.started[prefix]
            answer = ended[prefix] - self.started[prefix]
            phases = {phase: self.spans[phase][prefix] for phase in ("tower", "resampler", "prefill")}
            phases.update(first_token=first_token, decode=answer - first_token, answer=answer)
            if self.layers:
                phases.update({f"{phase}_layer": self.layer_spans.get(phase, {prefix: 0.0})[prefix]
                               for phase in self.LAYER_PHASES})
            self.seconds.update({prefix + phase: value for phase, value in phases.items()})


def answer(model: MiniCPMV, batch: MultimodalBatch, new_tokens: int, probe: LiveTensorBytes | None = None,
           layers: dict[str, nn.Module] | None = None) -> dict:
    """Generate exactly ``new_tokens`` greedy tokens; seconds per phase (``PhaseClock``)."""
    with PhaseClock(model, probe, layers) as clock:
        completions = model.generate(batch, min_new_tokens=new_tokens, max_new_tokens=new_tokens)
    lengths = {len(completion.token_ids) for completion in completions}
    if lengths != {new_tokens}:
        raise RuntimeError(f"generate returned {sorted(lengths)} tokens, not {new_tokens}")
    return clock.seconds
