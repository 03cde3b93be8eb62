"""Where a released 16K forward without gradients spends its host time (one layer, B=1, 32/2 heads, D=128, bf16):
the host functions of the call wrapped with perf_counter (no synchronisation inside a call, one after it), the mean
over 50 calls of each one's own host time, microseconds, and of the whole call. Unlike cProfile, nothing else is
timed, so the numbers are the call's own. One JSON line.

    python host_stages.py [LENGTH]
"""
import json
import sys
import time

import slkernels.api as api
import slkernels.triton_ops.function as fn
import torch
from slkernels import SuperlinearConfig, superlinear_attention

length = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
cfg = SuperlinearConfig.released()
spent: dict[str, float] = {}


def timed(module, name, label=None):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            key = label or name
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
    setattr(module, name, wrapper)


timed(api, "check_inputs")
timed(api, "_replay_key")
timed(fn, "search_topk")
timed(fn, "span_lists")
timed(fn, "window_lists")
timed(fn, "run_entries", "run_entries (window pass; span pass too where not warp-specialised)")
timed(torch, "sort", "torch.sort (span lists)")
timed(torch, "full", "torch.full (lse_s, window counts)")

with torch.no_grad():
    for _ in range(5):
        superlinear_attention(q, k, v, qs, cfg, backend="triton")
    torch.cuda.synchronize()
    spent.clear()
    total = 0.0
    n = 50
    for _ in range(n):
        t0 = time.perf_counter()
        superlinear_attention(q, k, v, qs, cfg, backend="triton")
        total += time.perf_counter() - t0
        torch.cuda.synchronize()
print(json.dumps({"length": length, "calls": n, "host_us_per_call": round(1e6 * total / n, 1),
                  "stages_us": {k: round(1e6 * t / n, 1) for k, t in spent.items()}}))
