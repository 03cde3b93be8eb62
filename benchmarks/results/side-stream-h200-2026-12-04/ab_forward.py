"""This tree's forward without gradients against another copy's (a package of another name, e.g.
build/head/slkernels_head) in one process: one layer, B=1, 32/2 heads, D=128, bf16, through `superlinear_attention`,
synchronised per call with the two packages alternated call by call (median of REPS); the outputs compared
(torch.equal), peak memory above the inputs; with `--profile`, the kernels of one call of each (torch profiler).
One JSON line per result.

    python ab_forward.py SETTING LENGTH BASE_PACKAGE [REPS] [--profile]
"""
import collections
import importlib
import json
import statistics
import sys

import torch

setting, length, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
reps = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4].isdigit() else 7
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
packages = {name: importlib.import_module(name) for name in ("slkernels", base)}


def call(m):
    with torch.no_grad():
        return m.superlinear_attention(q, k, v, qs, getattr(m.SuperlinearConfig, setting)(), backend="triton")


outs, peaks = {}, {}
for name, m in packages.items():
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    outs[name] = call(m)
    torch.cuda.synchronize()
    peaks[name] = (torch.cuda.max_memory_allocated() - before) / 2**30
a, b = outs.values()
print(json.dumps({"setting": setting, "length": length, "equal": bool(torch.equal(a, b)),
                  "max_abs_diff": float((a.float() - b.float()).abs().max()), "peak_gib": peaks}), flush=True)
outs.clear()
a = b = None
times = {name: [] for name in packages}
for _ in range(reps):
    for name, m in packages.items():
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        e0.record()
        call(m)
        e1.record()
        torch.cuda.synchronize()
        times[name].append(e0.elapsed_time(e1))
for name, t in times.items():
    print(json.dumps({"setting": setting, "length": length, "package": name, "median_ms": statistics.median(t),
                      "min_ms": min(t), "max_ms": max(t)}), flush=True)
if "--profile" in sys.argv:
    from torch.profiler import ProfilerActivity, profile

    for name, m in packages.items():
        call(m)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call(m)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        by_name, count = collections.Counter(), collections.Counter()
        for e in kernels:
            by_name[e.name[:60]] += e.device_time
            count[e.name[:60]] += 1
        span = max(e.time_range.end for e in kernels) - min(e.time_range.start for e in kernels)
        print(json.dumps({"setting": setting, "length": length, "package": name, "profile_span_ms": span / 1e3,
                          "kernel_sum_ms": sum(by_name.values()) / 1e3,
                          "kernels": {n: [round(t / 1e3, 3), count[n]] for n, t in by_name.most_common(12)}}),
              flush=True)
