"""A short released forward (one layer, B=1, 32/2 heads, D=128, bf16, no gradient) with its window pass first and
last, in one process, dense SDPA beside them: per call synchronised (the bench's protocol: events around one call),
back to back (100 calls, one sync), the host time of one call (perf_counter around it, no sync), and under
torch.profiler the kernels of one call (count, summed GPU time, span from the first kernel's start to the last's
end, the first 40). One JSON line per timing; the largest difference of the two orders' outputs first.

    python window_first.py LENGTH [SEARCH_KEY]     (default: anchor)
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.triton_ops import function as fn

length = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
key = sys.argv[2] if len(sys.argv) > 2 else "anchor"
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
cfg = SuperlinearConfig(search_key=key)  # the released setting with either search key


def ordered(rows):
    def call():
        fn.WINDOW_FIRST_MAX_ROWS = rows
        return superlinear_attention(q, k, v, qs, cfg, backend="triton")
    return call


calls = {"window first": ordered(1 << 40), "window last": ordered(0),
         "dense SDPA": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)}


def timing(call) -> dict:
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    synced, host = [], []
    for _ in range(30):
        a.record()
        t0 = time.perf_counter()
        call()
        host.append(1e3 * (time.perf_counter() - t0))
        b.record()
        torch.cuda.synchronize()
        synced.append(a.elapsed_time(b))
    a.record()
    for _ in range(100):
        call()
    b.record()
    torch.cuda.synchronize()
    return {"synced_ms": statistics.median(synced), "back_to_back_ms": a.elapsed_time(b) / 100,
            "host_ms": statistics.median(host)}


def kernels_of(call) -> dict:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    t0 = kernels[0].time_range.start
    return {"kernels": len(kernels), "gpu_busy_ms": sum(e.time_range.end - e.time_range.start for e in kernels) / 1e3,
            "gpu_span_ms": (max(e.time_range.end for e in kernels) - t0) / 1e3,
            "first_kernels": [(e.name[:40], round((e.time_range.start - t0) / 1e3, 3),
                               round((e.time_range.end - e.time_range.start) / 1e3, 3)) for e in kernels[:40]]}


with torch.no_grad():
    outs = {name: call().float() for name, call in calls.items()}
    diff = (outs["window first"] - outs["window last"]).abs()
    print(json.dumps({"length": length, "key": key, "max_diff_first_vs_last": float(diff.max()),
                      "rows_differing": int((diff > 0).any(-1).sum())}))
    for call in calls.values():
        for _ in range(3):
            call()
    torch.cuda.synchronize()
    for rep in range(3):
        for name, call in calls.items():
            print(json.dumps({"length": length, "key": key, "step": name, "rep": rep, **timing(call)}), flush=True)
    for name, call in calls.items():
        print(json.dumps({"length": length, "key": key, "step": name, **kernels_of(call)}), flush=True)
