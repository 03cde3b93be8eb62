"""The warp-specialised span dq pass (`attend_ws`, MODE_DQ_SPAN) against the `tl` entry kernel's, on a GPU.

    python benchmarks/ws_span_dq.py [--check] [--backward] [--json FILE] [SETTING:LENGTH ...]
                                    [--tiles BM,BN,STAGES,REGS,PERSISTENT ...]

For each setting and length (default released:262144): one forward and backward as training runs them, recording
the backward's span dq call (span lists, joint log-sum-exps, gates, deltas). The call is then replayed by both
kernels into fresh buffers: the largest differences of dq and of ``sum p (dp - c)`` relative to their largest
elements, and the median time of the pass under each tiling beside the `tl` kernel's (before and after, to see
drift). `--check` compares only. `--backward` also times the whole backward (`function.WS_SPAN_DQ_MIN_KEYS` 0, 1,
0).
"""

from __future__ import annotations

import sys

import torch
from profile_passes import inputs  # benchmarks/ on the path
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.attend import MODE_DQ_SPAN, run_entries
from slkernels.triton_ops.attend_ws import WS_DQ_TILES, run_entries_ws
from ws_forward import run_cases, timed


def recorded_call(cfg, q, k, v, qs, pos, s0, scale, length, grad):
    """The backward's span dq call as (args, kwargs), with the `tl` kernel."""
    calls = []

    def record(mode, *args, **kwargs):
        if int(mode) == int(MODE_DQ_SPAN):
            calls.append((args, {key: (x.clone() if key in ("dq", "out_e") else x) for key, x in kwargs.items()}))
        return run_entries(mode, *args, **kwargs)

    fn.WS_SPAN_DQ_MIN_KEYS = 0
    _, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
    original, fn.run_entries = fn.run_entries, record
    try:
        fn.backward_pass(grad, q, k, v, qs, saved, scale)
    finally:
        fn.run_entries = original
    return calls[0]


def one(setting: str, length: int, tilings: list[tuple[int, ...]], check_only: bool, backward: bool) -> dict:
    cfg = getattr(SuperlinearConfig, setting)()
    print(f"{setting} L={length} on {torch.cuda.get_device_name()}", flush=True)
    q, k, v, qs, pos, s0 = inputs(length)
    grad = torch.randn_like(q)
    scale = 128 ** -0.5
    args, kwargs = recorded_call(cfg, q, k, v, qs, pos, s0, scale, length, grad)
    row = dict(setting=setting, length=length, device=torch.cuda.get_device_name(), tiles={}, tl_ms=[])

    def run(kernel, tiles=None):
        kw = dict(kwargs, dq=torch.zeros_like(kwargs["dq"]), out_e=torch.zeros_like(kwargs["out_e"]))
        if tiles is not None:
            kw["tiles"] = tiles
        kernel(MODE_DQ_SPAN, *args, **kw)
        return kw["dq"], kw["out_e"]

    ref_dq, ref_part = run(run_entries)
    for tiles in tilings:
        dq, part = run(run_entries_ws, tiles)
        torch.cuda.synchronize()
        diff = max(float((dq - ref_dq).abs().max() / ref_dq.abs().max()),
                   float((part - ref_part).abs().max() / ref_part.abs().max()))
        ok = diff < 2e-2  # bf16 products summed in another order
        print(f"  {tiles}: largest difference {diff:.2e} of the largest element {'EXACT' if ok else 'WRONG'}",
              flush=True)
        row["tiles"][str(tiles)] = dict(diff=diff, exact=ok)
    if check_only:
        return row
    row["tl_ms"].append(timed("span dq, tl", lambda: run(run_entries)))
    for tiles in tilings:
        row["tiles"][str(tiles)]["ms"] = timed(f"span dq, ws {tiles}", lambda t=tiles: run(run_entries_ws, t))
    row["tl_ms"].append(timed("span dq, tl", lambda: run(run_entries)))
    if backward:
        _, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        row["backward_ms"] = {}
        for keys, label in ((0, "tl"), (1, "ws"), (0, "tl")):
            fn.WS_SPAN_DQ_MIN_KEYS = keys
            row["backward_ms"].setdefault(label, []).append(timed(
                f"whole backward, span dq {label}", lambda: fn.backward_pass(grad, q, k, v, qs, saved, scale), reps=3))
    return row


def main(argv: list[str] | None = None) -> int:
    return run_cases(argv, __doc__, one, WS_DQ_TILES, "BM,BN,STAGES,REGS,PERSISTENT", "backward")


if __name__ == "__main__":
    sys.exit(main())
