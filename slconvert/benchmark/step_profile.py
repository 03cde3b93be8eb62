"""Where a whole model's eager decode step spends its time: on the host or on the device, and in which operations.

A decode step of a large hybrid model launches many small kernels; when the host (Python, launch calls,
synchronisations such as `.item()`) takes longer than the device's work, faster kernels change nothing and CUDA
graphs or fewer launches do. `profile_steps` runs a few steps under `torch.profiler` and reports, per step: the wall
time, the device's busy time (the sum of its kernels' times), the kernel launches, the host-device
synchronisations, and the operations that take the most host time and the kernels that take the most device time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["profile_steps", "TOP_OPS"]

TOP_OPS = 12
# host-side calls that launch one kernel each, and calls that wait for the device
_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchCooperativeKernel")
_SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def _is_kernel(event) -> bool:
    kind = getattr(event, "device_type", None)
    return kind is not None and kind != torch.autograd.DeviceType.CPU


def profile_steps(step: Callable, token, position: int, steps: int, device: torch.device):
    """Run `steps` greedy steps of `step(token, position) -> logits` under the profiler (after the caller's own
    warm-up). Returns (summary, next token, next position); times in ms per step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            logits = step(token, position)
            token = logits[:, -1:].argmax(-1)
            position += 1
        sync()
        wall = time.perf_counter() - start
    events = prof.events()
    per = 1.0 / steps
    kernels = [e for e in events if _is_kernel(e)]
    host = sorted((a for a in prof.key_averages() if a.self_cpu_time_total > 0), key=lambda a: -a.self_cpu_time_total)
    by_kernel: dict[str, list[float]] = {}
    for e in kernels:
        by_kernel.setdefault(e.name, []).append(e.device_time_total)
    busy = sorted(by_kernel.items(), key=lambda item: -sum(item[1]))
    summary = {
        "steps": steps,
        "wall_ms": 1e3 * wall * per,
        "device_busy_ms": sum(e.device_time_total for e in kernels) * 1e-3 * per if device.type == "cuda" else None,
        "kernels": len(kernels) * per,
        "launch_calls": sum(1 for e in events if e.name in _LAUNCHES) * per,
        "synchronisations": sum(1 for e in events if e.name in _SYNCS) * per,
        "scalar_reads": sum(1 for e in events if e.name == "aten::_local_scalar_dense") * per,
        "top_host_ops": [{"op": a.key, "calls": a.count * per, "ms": a.self_cpu_time_total * 1e-3 * per}
                         for a in host[:TOP_OPS]],
        "top_kernels": [{"kernel": name, "calls": len(times) * per, "ms": sum(times) * 1e-3 * per}
                        for name, times in busy[:TOP_OPS]],
    }
    return summary, token, position
