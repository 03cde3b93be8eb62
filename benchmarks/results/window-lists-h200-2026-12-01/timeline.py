"""Call 3 (code of af61a32): one released forward (no grad) at 16K and 32K under torch.profiler: GPU kernels in order
with durations and the gap before each, host ops; then the search at 16 vs 32 anchors per block at 16K-128K.
Run from the repository root (it imports `inputs` from benchmarks/profile_passes.py)."""
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.api import superlinear_attention
from slkernels.triton_ops.search import search_topk
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
from profile_passes import inputs  # noqa: E402

from slconvert.benchmark.timing import measure  # noqa: E402

cfg = SuperlinearConfig.released()
for length in (16384, 32768):
    q, k, v, qs, pos, s0 = inputs(length)

    def call(q=q, k=k, v=v, qs=qs, cv=True):
        return superlinear_attention(q, k, v, qs, cfg, backend="triton", check_values=cv)

    with torch.no_grad():
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        m = measure(call, budget_ms=500, max_reps=50)
        print(f"L={length} forward median {m.ms:.3f} ms (min {min(m.ms_all):.3f})")
        for cv in (True, False):
            m2 = measure(lambda cv=cv: call(cv=cv), budget_ms=500, max_reps=50)
            print(f"  check_values={cv}: {m2.ms:.3f}")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
    evs = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    t0 = prev_end = evs[0].time_range.start
    busy = 0
    for e in evs:
        dur = e.time_range.end - e.time_range.start
        busy += dur
        print(f"  +{e.time_range.start - t0:8.1f} gap {e.time_range.start - prev_end:7.1f} dur {dur:8.1f}  {e.name[:90]}")
        prev_end = max(prev_end, e.time_range.end)
    print(f"  GPU kernels {len(evs)}, busy {busy / 1000:.3f} ms, span {(prev_end - t0) / 1000:.3f} ms")
    print("  top-level host ops:", sum(1 for e in prof.events() if e.device_type.name == "CPU" and e.cpu_parent is None))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
    for bn in (16, 32):
        for w in (1, 2):
            mm = measure(lambda bn=bn, w=w, qs=qs, k=k, pos=pos, s0=s0, length=length: search_topk(
                qs, k, cfg, pos, s0, length, block_n=bn, num_warps=w), budget_ms=300, max_reps=50)
            print(f"  search BN={bn} warps={w}: {mm.ms:.3f} ms")
for length in (65536, 131072):
    q, k, v, qs, pos, s0 = inputs(length)
    for bn in (16, 32):
        mm = measure(lambda bn=bn, qs=qs, k=k, pos=pos, s0=s0, length=length: search_topk(
            qs, k, cfg, pos, s0, length, block_n=bn, num_warps=1), budget_ms=300, max_reps=50)
        print(f"L={length} search BN={bn}: {mm.ms:.3f} ms")
