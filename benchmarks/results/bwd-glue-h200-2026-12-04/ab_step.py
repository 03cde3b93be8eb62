"""This tree's kernels against another copy's (a package of another name, e.g. build/head/slkernels_head) in one
process: forward + backward through `superlinear_attention` (one layer, B=1, 32/2 heads, D=128, bf16), synchronised
per call with the two packages alternated call by call (median of REPS), then QUEUED calls back to back per package
with one synchronisation (median of 3 rounds, per call). The gradients' largest differences relative to the
largest element first. One JSON line per timing.

    python ab_step.py SETTING LENGTH BASE_PACKAGE [REPS] [QUEUED]
"""
import importlib
import json
import statistics
import sys

import torch

setting, length, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 10
queued = int(sys.argv[5]) if len(sys.argv) > 5 else 20
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
grad = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
packages = {name: importlib.import_module(name) for name in ("slkernels", base)}


def forward_backward(m):
    for x in (q, k, v, qs):
        x.grad = None
    cfg = getattr(m.SuperlinearConfig, setting)()
    m.superlinear_attention(q, k, v, qs, cfg, backend="triton").backward(grad)
    return [x.grad for x in (q, k, v, qs)]


ga, gb = (forward_backward(m) for m in packages.values())
print(json.dumps({"setting": setting, "length": length, "grad_rel_diff": {
    name: float((a.float() - b.float()).abs().max() / b.float().abs().max())
    for name, a, b in zip(("dq", "dk", "dv", "dq_search"), ga, gb)}}), flush=True)
times = {name: [] for name in packages}
for _ in range(reps):
    for name, m in packages.items():
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        forward_backward(m)
        b.record()
        torch.cuda.synchronize()
        times[name].append(a.elapsed_time(b))
for name, t in times.items():
    print(json.dumps({"setting": setting, "length": length, "timing": "synchronised", "package": name,
                      "median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t)}), flush=True)
if queued:
    rounds = {name: [] for name in packages}
    for _ in range(3):
        for name, m in packages.items():
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(queued):
                forward_backward(m)
            b.record()
            torch.cuda.synchronize()
            rounds[name].append(a.elapsed_time(b) / queued)
    for name, t in rounds.items():
        print(json.dumps({"setting": setting, "length": length, "timing": f"queued {queued}", "package": name,
                          "median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t)}), flush=True)
