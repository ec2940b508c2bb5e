"""Measuring helpers shared by the benchmarks: wall-clock time and peak memory of one step.

On CUDA, peak memory is ``torch.cuda.max_memory_allocated`` above what was allocated before the step.
On CPU there is no allocator statistic, so ``LiveTensorBytes`` follows every tensor storage created
during the step (forward and backward) through weak references until it is freed, and records the
peak of their total after each op. Parameters and inputs are excluded; scratch memory inside a single
kernel is not seen. ``PeakRSS`` is the operating system's view instead: the process's peak resident
memory above its level when the block starts (Linux).
"""

from __future__ import annotations

import ctypes
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created under this mode and still alive (CPU memory probe).

    Args:
        preexisting: tensors whose storage must not count (parameters, inputs), e.g. when an
            in-place op or a view returns them.

    Attributes:
        phase: a label the caller may change during the step; ``phase_peaks[label]`` is the peak
            of the live total while that label was set.
    """

    def __init__(self, preexisting: list[Tensor]) -> None:
        super().__init__()
        self.ignored = {StorageWeakRef(t.untyped_storage()).cdata for t in preexisting}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0
        self.phase = "step"
        self.phase_peaks: dict[str, int] = {}

    def release_expired(self) -> None:
        """Forget the storages freed since the last op; ``current`` is then the live total."""
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.release_expired()
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, Tensor):
                continue
            ref = StorageWeakRef(tensor.untyped_storage())
            if ref.cdata not in self.ignored and ref.cdata not in self.live:
                self.live[ref.cdata] = (ref, tensor.untyped_storage().nbytes())
                self.current += self.live[ref.cdata][1]
        self.peak = max(self.peak, self.current)
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), self.current)
        return out


class PeakRSS:
    """Peak resident memory of this process inside the ``with`` block, above its level at entry (Linux).

    On entry, heap memory already freed is handed back to the OS (glibc ``malloc_trim``) and the
    kernel's high-water mark is reset (``/proc/self/clear_refs`` <- 5); on exit, ``peak`` is VmHWM
    minus the resident size at entry, in bytes. It counts everything the block touches: tensors,
    kernel scratch, the allocator's retained and fragmented memory. Run it in a fresh process: memory
    an earlier step freed but the allocator kept would be reused unseen.
    """

    STATUS = Path("/proc/self/status")

    @classmethod
    def _status_bytes(cls, field: str) -> int:
        kib = re.search(rf"^{field}:\s+(\d+) kB", cls.STATUS.read_text(), re.MULTILINE)
        if kib is None:
            raise RuntimeError(f"{cls.STATUS} has no {field} line: PeakRSS needs Linux")
        return int(kib.group(1)) * 1024

    def __enter__(self) -> "PeakRSS":
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc: nothing to trim
            pass
        Path("/proc/self/clear_refs").write_text("5")
        self.baseline = self._status_bytes("VmRSS")
        self.peak = 0
        return self

    def __exit__(self, *exc) -> None:
        self.peak = self._status_bytes("VmHWM") - self.baseline


def peak_bytes(step: Callable[[], None], preexisting: list[Tensor], device: torch.device) -> int:
    """Peak memory of ``step`` beyond what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with LiveTensorBytes(preexisting) as probe:
        step()
    return probe.peak


def timed(step: Callable[[], None], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``step`` (synchronising CUDA around it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _steps(module: torch.nn.Module, inputs: tuple[Tensor, ...], train: bool) -> dict[str, Callable[[], None]]:
    """Forward (no grad) and, with ``train``, forward+backward steps of ``forward`` and ``forward_padded``."""
    def forward(path: Callable) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                path(*inputs)
        return step

    def backward(path: Callable) -> Callable[[], None]:
        def step() -> None:
            module.zero_grad(set_to_none=True)
            path(*inputs).square().mean().backward()
        return step

    steps = {"forward_packed": forward(module.forward), "forward_padded": forward(module.forward_padded)}
    if train:
        steps.update(train_packed=backward(module.forward), train_padded=backward(module.forward_padded))
    return steps


def compare_packed_padded(module: torch.nn.Module, inputs: tuple[Tensor, ...], device: torch.device,
                          repeats: int, train: bool = True) -> dict:
    """Time and measure ``module.forward`` (packed) against ``module.forward_padded`` on the same inputs.

    Both paths run in one process: one memory pass per step (which doubles as warm-up), then
    ``repeats`` timed rounds, interleaved so machine load hits both paths alike; medians reported.

    Returns:
        ``max_abs_diff`` of the two outputs, ``seconds_<step>``, ``peak_bytes_<step>`` for the steps
        ``forward_packed``, ``forward_padded`` (and ``train_*``), and ``time_ratio_<kind>`` /
        ``memory_ratio_<kind>`` = packed / padded.
    """
    with torch.no_grad():
        max_abs_diff = (module(*inputs) - module.forward_padded(*inputs)).abs().max().item()
    steps = _steps(module, inputs, train)
    preexisting = [*module.parameters(), *inputs]
    peaks = {name: peak_bytes(step, preexisting, device) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    figures: dict = {"max_abs_diff": max_abs_diff}
    for name in steps:
        figures[f"seconds_{name}"] = statistics.median(times[name])
        figures[f"peak_bytes_{name}"] = peaks[name]
    for kind in ("forward", "train") if train else ("forward",):
        figures[f"time_ratio_{kind}"] = figures[f"seconds_{kind}_packed"] / figures[f"seconds_{kind}_padded"]
        figures[f"memory_ratio_{kind}"] = figures[f"peak_bytes_{kind}_packed"] / figures[f"peak_bytes_{kind}_padded"]
    return figures


def print_comparison(title: str, figures: dict) -> None:
    """The table of ``compare_packed_padded`` figures, headed by ``title``."""
    print(title)
    print(f"{'step':<18}{'packed s':>10}{'padded s':>10}{'ratio':>8}{'packed MiB':>12}{'padded MiB':>12}{'ratio':>8}")
    for kind, label in (("forward", "forward"), ("train", "forward+backward")):
        if f"time_ratio_{kind}" not in figures:
            continue
        packed_s, padded_s = figures[f"seconds_{kind}_packed"], figures[f"seconds_{kind}_padded"]
        packed_m, padded_m = (figures[f"peak_bytes_{kind}_{path}"] / 2**20 for path in ("packed", "padded"))
        print(f"{label:<18}{packed_s:>10.3f}{padded_s:>10.3f}{figures[f'time_ratio_{kind}']:>8.2f}"
              f"{packed_m:>12.1f}{padded_m:>12.1f}{figures[f'memory_ratio_{kind}']:>8.2f}")
    print(f"max |packed - padded| = {figures['max_abs_diff']:.2e}")
