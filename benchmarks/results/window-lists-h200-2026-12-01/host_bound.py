"""Released forward (no grad) at 16K under torch.profiler: kernel count, GPU busy time and span of one call."""
import torch
from slkernels import SuperlinearConfig
from slkernels.api import superlinear_attention
from torch.profiler import ProfilerActivity, profile

from slconvert.benchmark.timing import measure


def inputs(length):
    q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return q, k, v, qs, None, None


cfg = SuperlinearConfig.released()
for length in (16384, 32768):
    q, k, v, qs, pos, s0 = inputs(length)

    def call(q=q, k=k, v=v, qs=qs):
        return superlinear_attention(q, k, v, qs, cfg, backend="triton")

    with torch.no_grad():
        m = measure(call, budget_ms=1000, max_reps=100)
        print(f"L={length} forward median {m.ms:.3f} ms (min {min(m.ms_all):.3f}, {len(m.ms_all)} runs)")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
    evs = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    busy = sum(e.time_range.end - e.time_range.start for e in evs)
    span = max(e.time_range.end for e in evs) - evs[0].time_range.start
    print(f"  under the profiler: GPU kernels {len(evs)}, busy {busy / 1000:.3f} ms, span {span / 1000:.3f} ms")
