"""The forward without gradients (inference in chunks of rows) with each chunk's route (search + span lists) on a
side stream one chunk ahead, against the chunks one after another on one stream and the one pass, in one process:
one layer, B=1, 32/2 heads, D=128, bf16, through `superlinear_attention`. Variants alternate call by call,
synchronised per call (median of REPS); peak memory above the inputs per variant; outputs compared with the
sequential chunks' (torch.equal). Then a kernel profile of one call per variant (`--profile`). One JSON line each.

    python ab_infer.py SETTING LENGTH [REPS] [--profile]
"""
import collections
import json
import statistics
import sys

import torch
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.triton_ops import function as fn

setting, length = sys.argv[1], int(sys.argv[2])
reps = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 7
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
cfg = getattr(SuperlinearConfig, setting)()
VARIANTS = {  # (INFERENCE_SIDE_STREAM, INFERENCE_SIDE_PRIORITY, INFERENCE_EXTRA)
    "sequential": (False, 0, 0.4),
    "side_p0": (True, 0, 0.4),
    "side_high": (True, -1, 0.4),
    "side_low": (True, 0, 0.4),  # the call on a stream of higher priority than the side stream's
    "one_pass": (False, 0, 0.0),
}
high = torch.cuda.Stream(priority=-2)


def call(name):
    fn.INFERENCE_SIDE_STREAM, fn.INFERENCE_SIDE_PRIORITY, fn.INFERENCE_EXTRA = VARIANTS[name]
    with torch.no_grad():
        if name != "side_low":
            return superlinear_attention(q, k, v, qs, cfg, backend="triton")
        high.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(high):
            out = superlinear_attention(q, k, v, qs, cfg, backend="triton")
        torch.cuda.current_stream().wait_stream(high)
        return out


outs = {}
for name in VARIANTS:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    outs[name] = call(name)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    rows = fn.inference_chunk_rows(length, cfg.num_spans) if VARIANTS[name][2] else length
    print(json.dumps({"setting": setting, "length": length, "variant": name, "chunks": -(-length // rows),
                      "peak_gib": peak / 2**30,
                      "equal_to_sequential": bool(torch.equal(outs[name], outs["sequential"])),
                      "max_abs_diff": float((outs[name].float() - outs["sequential"].float()).abs().max())}),
          flush=True)
outs.clear()
times = {name: [] for name in VARIANTS}
for _ in range(reps):
    for name in VARIANTS:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        call(name)
        b.record()
        torch.cuda.synchronize()
        times[name].append(a.elapsed_time(b))
for name, t in times.items():
    print(json.dumps({"setting": setting, "length": length, "variant": name, "median_ms": statistics.median(t),
                      "min_ms": min(t), "max_ms": max(t)}), flush=True)

if "--profile" in sys.argv:
    from torch.profiler import ProfilerActivity, profile

    for name in ("sequential", "side_p0"):
        call(name)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call(name)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        by_name = collections.Counter()
        count = collections.Counter()
        for e in kernels:
            by_name[e.name[:60]] += e.device_time
            count[e.name[:60]] += 1
        first = min(e.time_range.start for e in kernels)
        last = max(e.time_range.end for e in kernels)
        # the union of the kernels' intervals: how long the GPU had at least one kernel running
        busy, end = 0.0, -1.0
        for e in sorted(kernels, key=lambda e: e.time_range.start):
            s0, e0 = e.time_range.start, e.time_range.end
            if s0 > end:
                busy += e0 - s0
                end = e0
            elif e0 > end:
                busy += e0 - end
                end = e0
        print(json.dumps({"setting": setting, "length": length, "variant": name, "profile_span_ms": (last - first) / 1e3,
                          "busy_ms": busy / 1e3, "kernel_sum_ms": sum(by_name.values()) / 1e3,
                          "kernels": {n: [round(t / 1e3, 3), count[n]] for n, t in by_name.most_common(14)}}),
              flush=True)
