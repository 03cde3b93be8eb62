"""Kernel timeline of decode steps as a model's graph holds them (16 steps over 16 caches in one CUDA graph, B = 1,
32 query / 2 KV heads, D = 128, bf16, released), from the profiler's trace of five graph replays: each kernel's
duration and the time from the end of one kernel to the start of the next (negative where they overlap), per pair
of kernel names, in microseconds; dense SDPA the same way.

    python timeline.py LENGTH [NAME=VALUE ...]   (decode settings, Python literals)
"""

import ast
import collections
import json
import statistics
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import decode
from torch.profiler import ProfilerActivity, profile

length = int(sys.argv[1])
for item in sys.argv[2:]:
    name, _, value = item.partition("=")
    setattr(decode, name, ast.literal_eval(value))
cfg = SuperlinearConfig.released()
torch.manual_seed(0)
caches = []
for _ in range(16):
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    caches.append((q, k, v, qs))
pos = torch.tensor([length - 1], device="cuda")
s0 = torch.zeros(1, dtype=torch.int64, device="cuda")


def steps():
    return [decode.superlinear_decode(q, k, v, qs, cfg, pos, s0, 128**-0.5) for q, k, v, qs in caches]


def dense():
    return [torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=128**-0.5, enable_gqa=True)
            for q, k, v, _ in caches]


for label, fn in (("superlinear", steps), ("dense SDPA", dense)):
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(20):
        graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            graph.replay()
        torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.end, e.name[:40]) for e in prof.events()
                     if e.device_type.name == "CUDA")
    durations, gaps = collections.defaultdict(list), collections.defaultdict(list)
    for i, (start, end, name) in enumerate(kernels):
        durations[name].append(end - start)
        if i:
            gaps[f"{kernels[i - 1][2]} -> {name}"].append(start - kernels[i - 1][1])
    span = (kernels[-1][1] - kernels[0][0]) / (5 * 16)
    print(json.dumps({"label": label, "length": length, "settings": sys.argv[2:], "kernels": len(kernels),
                      "us_per_step_in_trace": round(span, 2),
                      "duration_us": {n: round(statistics.median(d), 2) for n, d in durations.items()},
                      "gap_us": {n: round(statistics.median(d), 2) for n, d in gaps.items()}}), flush=True)
