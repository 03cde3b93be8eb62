"""Where one released forward + backward goes, kernel by kernel (torch.profiler), beside dense SDPA's.

    python profile_step.py SETTING LENGTH [--json FILE]

Benchmark shape (B = 1, 32 / 2 heads, D = 128, bf16). Times the forward + backward synchronised per call and 20
queued, then profiles three calls: each kernel's time per call, the GPU's busy time (kernels summed) and its span
(first kernel start to last end) per call. Gradients are set to None after each call, as `slconvert bench` does.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def timed(f, reps=10, queued=1):
    f()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(queued):
            f()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / queued)
    return sorted(times)[reps // 2]


def kernels_of(f, calls=3):
    f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            f()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    table = {}
    for e in events:
        name = e.name.split("(")[0].split("<")[0][-60:] if not e.name.startswith("_") else e.name
        t = table.setdefault(name, [0.0, 0])
        t[0] += e.time_range.elapsed_us() / calls / 1e3
        t[1] += 1
    busy = sum(v[0] for v in table.values())
    span = (max(e.time_range.end for e in events) - min(e.time_range.start for e in events)) / calls / 1e3
    return dict(busy_ms=busy, span_ms=span, kernels={k: dict(ms=v[0], launches=v[1] / calls)
                                                      for k, v in sorted(table.items(), key=lambda kv: -kv[1][0])})


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("setting")
    ap.add_argument("length", type=int)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    cfg = getattr(SuperlinearConfig, args.setting)()
    n = args.length
    torch.manual_seed(0)
    q, qs = (torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    k, v = (torch.randn(1, 2, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    grad = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
    pos = torch.arange(n, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5

    def sl():
        out = fn.superlinear_prefill(q, k, v, qs, cfg, pos, s0, scale)
        out.backward(grad)
        q.grad = k.grad = v.grad = qs.grad = None

    def sl_forward():
        with torch.no_grad():
            fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, n, for_backward=True)

    def dense():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
        out.backward(grad)
        q.grad = k.grad = v.grad = None

    row = dict(setting=args.setting, length=n, device=torch.cuda.get_device_name())
    for label, f in (("superlinear", sl), ("training forward", sl_forward), ("dense", dense)):
        row[label] = dict(synced_ms=timed(f), queued_ms=timed(f, reps=3, queued=20), **kernels_of(f))
        r = row[label]
        print(f"{args.setting} {n} {label}: synced {r['synced_ms']:.3f} ms, queued {r['queued_ms']:.3f}, "
              f"GPU busy {r['busy_ms']:.3f}, span {r['span_ms']:.3f}", flush=True)
        for name, kv in list(r["kernels"].items())[:25]:
            print(f"    {kv['ms']:8.3f} ms {kv['launches']:5.1f}x  {name}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
