"""Where a synchronised call's time goes beyond its kernels: the forward without gradients (one layer, B=1, 32/2 heads,
D=128, bf16, `superlinear_attention`), REPS calls each between CUDA events and synchronised (as `slconvert bench`
times them), with the host's time of each call (perf_counter, no synchronisation inside) and the SM clock and power
read through NVML after each call; then a profile of three calls with the host's activity: for each, the time from the
call's start on the host to its first kernel, the span of its kernels, and the kernels' idle gaps inside that span.
Dense SDPA's calls are timed the same way for the clock's sake. One JSON line per result.

    python host_gap.py SETTING LENGTH [REPS]
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from slkernels import SuperlinearConfig, superlinear_attention

setting, length = sys.argv[1], int(sys.argv[2])
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
cfg = getattr(SuperlinearConfig, setting)()


def sparse():
    with torch.no_grad():
        return superlinear_attention(q, k, v, qs, cfg, backend="triton")


def dense():
    with torch.no_grad():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def nvml():
    try:
        return torch.cuda.clock_rate(), torch.cuda.power_draw() / 1000.0
    except Exception:  # noqa: BLE001 - NVML missing: the timings stand without it
        return None, None


for name, fn, n in (("superlinear", sparse, reps), ("dense", dense, 3)):
    fn()
    torch.cuda.synchronize()
    rows = []
    for _ in range(n):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        e0.record()
        h0 = time.perf_counter()
        fn()
        host = (time.perf_counter() - h0) * 1e3
        e1.record()
        torch.cuda.synchronize()
        clock, watts = nvml()
        rows.append({"ms": e0.elapsed_time(e1), "host_ms": host, "sm_mhz": clock, "watts": watts})
    print(json.dumps({"setting": setting, "length": length, "fn": name,
                      "median_ms": statistics.median(r["ms"] for r in rows), "calls": rows}), flush=True)

from torch.profiler import ProfilerActivity, profile  # noqa: E402

marks = []
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for i in range(3):
        torch.cuda.synchronize()
        with torch.profiler.record_function(f"call{i}"):
            sparse()
        torch.cuda.synchronize()
events = prof.events()
for i in range(3):
    call = next(e for e in events if e.name == f"call{i}" and e.device_type.name == "CPU")
    c0, c1 = call.time_range.start, call.time_range.end
    # the kernels this call launched: those that start after its host start and before the next call's
    nxt = next((e.time_range.start for e in events if e.name == f"call{i + 1}" and e.device_type.name == "CPU"),
               float("inf"))
    # (the CUDA-side ranges of the `callN` annotations are left out: they are not kernels)
    ks = sorted((e for e in events if e.device_type.name == "CUDA" and c0 <= e.time_range.start < nxt
                 and not e.name.startswith("call")),
                key=lambda e: e.time_range.start)
    gaps, end = [], ks[0].time_range.end
    for e in ks[1:]:
        if e.time_range.start > end:
            gaps.append(e.time_range.start - end)
        end = max(end, e.time_range.end)
    print(json.dumps({"call": i, "host_ms": (c1 - c0) / 1e3, "to_first_kernel_ms": (ks[0].time_range.start - c0) / 1e3,
                      "first_kernel": ks[0].name[:40], "kernel_span_ms": (end - ks[0].time_range.start) / 1e3,
                      "kernel_sum_ms": sum(e.time_range.end - e.time_range.start for e in ks) / 1e3,
                      "idle_in_span_ms": sum(gaps) / 1e3, "largest_gaps_ms": sorted(g / 1e3 for g in gaps)[-5:],
                      "kernels": len(ks)}), flush=True)
