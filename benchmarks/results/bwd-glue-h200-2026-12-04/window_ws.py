"""The forward's window pass on the warp-specialised kernel (`attend_ws.run_entries_ws`) against the `tl` one.

    python window_ws.py SETTING LENGTH [...]

Records the forward's window call (training: o_w and lse_w stored; inference: not), replays it with both kernels
into fresh outputs, prints the largest difference of the output (and o_w, lse_w) relative to its largest element
and the median time of each (tl, ws, tl).
"""

from __future__ import annotations

import json
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import attend
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.attend_ws import run_entries_ws
from slkernels.triton_ops.common import mode_value


def timed(f, reps=7):
    f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[reps // 2]


def one(setting, n):
    cfg = getattr(SuperlinearConfig, setting)()
    torch.manual_seed(0)
    q, qs = (torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.arange(n, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5
    rows = []
    original = fn.run_entries
    calls = []

    def record(mode, *args, **kw):
        if mode_value(mode) == mode_value(attend.MODE_FWD_WINDOW):
            calls.append((args, dict(kw)))
        return original(mode, *args, **kw)

    for training in (True, False):
        calls.clear()

        fn.run_entries = record
        try:
            fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, n, for_backward=training)
        finally:
            fn.run_entries = original
        args, kw = calls[0]
        outs = {}

        def run(kernel, kw=kw, args=args):
            fresh = {name: torch.empty_like(kw[name]) for name in ("o_w", "lse_w", "out") if kw.get(name) is not None}
            kernel(attend.MODE_FWD_WINDOW, *args, **{**kw, **fresh})
            return fresh

        outs["tl"], outs["ws"] = run(original), run(run_entries_ws)
        torch.cuda.synchronize()
        diff = {name: float((outs["ws"][name].float() - outs["tl"][name].float()).abs().max()
                            / outs["tl"][name].float().abs().max()) for name in outs["tl"]}
        ms = [timed(lambda: run(original)), timed(lambda: run(run_entries_ws)), timed(lambda: run(original))]
        row = dict(setting=setting, length=n, training=training, diff=diff, tl_ms=[ms[0], ms[2]], ws_ms=ms[1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    for case in sys.argv[1:]:
        s, n = case.split(":")
        one(s, int(n))
