"""This tree's kernels against another copy's (a package of another name, e.g. build/base/slkernels_base) in one
process, at one long length (one layer, B=1, 32/2 heads, D=128, bf16, released): the forward without gradients
and forward+backward, each synchronised per call, the two packages alternated call by call, the median of REPS.
The outputs' and gradients' largest differences first. One JSON line per timing.

    python ab_long.py LENGTH BASE_PACKAGE [REPS]
"""
import importlib
import json
import statistics
import sys

import torch

length, base = int(sys.argv[1]), sys.argv[2]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
grad = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
packages = {name: importlib.import_module(name) for name in ("slkernels", base)}


def forward(m):
    with torch.no_grad():
        return m.superlinear_attention(q, k, v, qs, m.SuperlinearConfig.released(), backend="triton")


def forward_backward(m):
    for x in (q, k, v, qs):
        x.grad = None
    m.superlinear_attention(q, k, v, qs, m.SuperlinearConfig.released(), backend="triton").backward(grad)
    return [x.grad for x in (q, k, v, qs)]


outs = {name: (forward(m), forward_backward(m)) for name, m in packages.items()}
(fa, ga), (fb, gb) = outs.values()
print(json.dumps({"length": length, "out_max_diff": float((fa.float() - fb.float()).abs().max()),
                  "grad_max_diff": max(float((a.float() - b.float()).abs().max()) for a, b in zip(ga, gb))}))
for step in (forward, forward_backward):
    times = {name: [] for name in packages}
    for _ in range(reps):
        for name, m in packages.items():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            a.record()
            step(m)
            b.record()
            torch.cuda.synchronize()
            times[name].append(a.elapsed_time(b))
    for name, t in times.items():
        print(json.dumps({"length": length, "step": step.__name__, "package": name, "median_ms": statistics.median(t),
                          "min_ms": min(t), "max_ms": max(t)}), flush=True)
