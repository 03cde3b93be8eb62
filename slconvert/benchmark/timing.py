"""Timing and memory measurement on one CUDA device: events around the call, median of repeats.

Long calls (a dense 256K backward takes seconds) get few repeats so a whole sweep fits in minutes;
short ones get many. Each measurement starts from a clean peak-memory counter so that peaks are
per pass, not per process.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Measurement", "measure", "measure_graph"]


@dataclass
class Measurement:
    ms: float  # median milliseconds
    ms_all: list[float]
    peak_bytes: int  # peak allocated during one call, on top of what was allocated before it
    base_bytes: int  # allocated before the call (inputs)
    queued_ms: float | None = None  # per call, of calls launched back to back with one synchronisation


def measure(fn: Callable[[], object], *, budget_ms: float = 2000.0, max_reps: int = 20, warmup: int = 1,
            queued: int = 0) -> Measurement:
    """Median time of `fn` over repeats that fit `budget_ms` (at least one after the warm-up), each call between
    events and synchronised, so that the host's time before the GPU starts counts. With `queued`, also the time per
    call of that many calls launched back to back and synchronised once (as a model's layers queue them: the
    host's time hides behind the GPU's), where they fit `budget_ms` at the median."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    torch.cuda.synchronize()
    first = start.elapsed_time(stop)
    peak = torch.cuda.max_memory_allocated() - base
    times = [first]
    reps = int(min(max_reps, max(0, budget_ms / max(first, 1e-3) - 1)))
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    median = statistics.median(times)
    queued_ms = None
    if queued > 0 and median * queued <= budget_ms:
        start.record()
        for _ in range(queued):
            fn()
        stop.record()
        torch.cuda.synchronize()
        queued_ms = start.elapsed_time(stop) / queued
    return Measurement(median, times, peak, base, queued_ms)


def measure_graph(fn: Callable[[], object], *, replays: int = 100) -> float | None:
    """Median ms of replaying `fn` captured in a CUDA graph (launch overhead removed); None if not capturable.

    This is how a serving loop runs one decode step, so it is the number to hold against decode targets.
    """
    try:
        fn()  # warm-up: compiles kernels and caches host-side tables outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graph.replay()
        torch.cuda.synchronize()
    except Exception:  # noqa: BLE001 - a failed capture is reported as "not capturable", not a crash
        return None
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        start.record()
        graph.replay()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)
