"""The released 16K forward's exposure to the host (one layer, B=1, 32/2 heads, D=128, bf16, no gradient):
per call synchronised (the bench's protocol), back to back (100 calls, one sync), the host time of one call
(perf_counter around the call, no sync, after a sync), and the kernels of one call under torch.profiler (count,
summed GPU time, span from the first kernel's start to the last's end). Dense SDPA beside it. One JSON line."""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from slkernels import SuperlinearConfig, superlinear_attention

length = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
calls = {"released": lambda: superlinear_attention(q, k, v, qs, SuperlinearConfig.released(), backend="triton"),
         "dense": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)}
out = {"length": length}
with torch.no_grad():
    for name, call in calls.items():
        for _ in range(3):
            call()
        torch.cuda.synchronize()
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
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        starts = [e.time_range.start for e in kernels]
        ends = [e.time_range.end for e in kernels]
        out[name] = {"synced_ms": statistics.median(synced), "back_to_back_ms": a.elapsed_time(b) / 100,
                     "host_ms": statistics.median(host), "kernels": len(kernels),
                     "gpu_busy_ms": sum(e.time_range.end - e.time_range.start for e in kernels) / 1e3,
                     "gpu_span_ms": (max(ends) - min(starts)) / 1e3 if kernels else None,
                     "first_kernels": [(e.name[:40], round((e.time_range.start - min(starts)) / 1e3, 3),
                                        round((e.time_range.end - e.time_range.start) / 1e3, 3)) for e in
                                       sorted(kernels, key=lambda e: e.time_range.start)[:40]]}
print(json.dumps(out))
