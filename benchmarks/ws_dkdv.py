"""The warp-specialised dk/dv kernel (`slkernels.triton_ops.attend_bwd_ws`) against the `tl` one, on a GPU.

    python benchmarks/ws_dkdv.py [--check] [--backward] [--json FILE] [SETTING:LENGTH ...]
                                 [--tiles BM,BN,STAGES,REGS,LOADER_REGS ...]

For each setting and length (default released:262144): one forward and backward as training runs them, recording
the two dk/dv calls of the backward (window list, then span list, with their log-sum-exps, coefficients and deltas).
Each call is then replayed by both kernels into fresh float32 buffers: the largest difference of dk and dv relative
to the largest element, and the median time of each pass under each tiling beside the `tl` kernel's (before and
after, to see drift). `--check` compares only. `--backward` also times the whole backward and forward + backward
(`function.WS_KEY_PASS` on and off) and dense SDPA's.
"""

from __future__ import annotations

import sys

import torch
from profile_passes import inputs  # benchmarks/ on the path
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.attend_bwd import dkdv
from slkernels.triton_ops.attend_bwd_ws import WS_DKDV_TILES, dkdv_ws
from ws_forward import run_cases, timed


def recorded_calls(cfg, q, k, v, qs, pos, s0, scale, length, grad):
    """The backward's dk/dv calls as (label, args, kwargs), with the `tl` kernel."""
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return dkdv(*args, **kwargs)

    fn.WS_KEY_PASS = False
    out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
    original, fn.dkdv = fn.dkdv, record
    try:
        fn.backward_pass(grad, q, k, v, qs, saved, scale)
    finally:
        fn.dkdv = original
    return [("window", *calls[0]), ("spans", *calls[1])]


def one(setting: str, length: int, tilings: list[tuple[int, ...]], check_only: bool, backward: bool) -> dict:
    cfg = getattr(SuperlinearConfig, setting)()
    print(f"{setting} L={length} on {torch.cuda.get_device_name()}", flush=True)
    q, k, v, qs, pos, s0 = inputs(length)
    grad = torch.randn_like(q)
    scale = 128 ** -0.5
    calls = recorded_calls(cfg, q, k, v, qs, pos, s0, scale, length, grad)
    row = dict(setting=setting, length=length, device=torch.cuda.get_device_name(), tiles={}, tl_ms={})

    def run(kernel, label, tiles=None):
        args, kwargs = next((a, kw) for name, a, kw in calls if name == label)
        entries, q_, k_, v_, do, lse, coef, delta, dk, dv, sc = args
        dk, dv = torch.zeros_like(dk), torch.zeros_like(dv)
        extra = {} if tiles is None else dict(tiles=tiles)
        kernel(entries, q_, k_, v_, do, lse, coef, delta, dk, dv, sc, accumulate=False, **extra)
        return dk, dv

    refs = {label: run(dkdv, label) for label, _, _ in calls}
    for tiles in tilings:
        entry = row["tiles"].setdefault(str(tiles), {})
        for label, (rk, rv) in refs.items():
            wk, wv = run(dkdv_ws, label, tiles)
            torch.cuda.synchronize()
            diff = max(float((wk - rk).abs().max() / rk.abs().max()), float((wv - rv).abs().max() / rv.abs().max()))
            ok = diff < 2e-2  # bf16 products summed in another order
            print(f"  {tiles} {label}: largest difference {diff:.2e} of the largest element "
                  f"{'EXACT' if ok else 'WRONG'}", flush=True)
            entry[label] = dict(diff=diff, exact=ok)
    if check_only:
        return row
    for label in refs:
        row["tl_ms"][label] = [timed(f"dk/dv {label}, tl", lambda lb=label: run(dkdv, lb))]
        for tiles in tilings:
            row["tiles"][str(tiles)][label]["ms"] = timed(
                f"dk/dv {label}, ws {tiles}", lambda lb=label, t=tiles: run(dkdv_ws, lb, t))
        row["tl_ms"][label].append(timed(f"dk/dv {label}, tl", lambda lb=label: run(dkdv, lb)))
    if backward:
        _, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        row["backward_ms"], row["fwd_bwd_ms"] = {}, {}
        for on, label in ((False, "tl"), (True, "ws"), (False, "tl")):
            fn.WS_KEY_PASS = on
            row["backward_ms"].setdefault(label, []).append(timed(
                f"whole backward, dk/dv {label}", lambda: fn.backward_pass(grad, q, k, v, qs, saved, scale), reps=3))
        del saved
        qr, kr, vr, qsr = (x.detach().requires_grad_() for x in (q, k, v, qs))

        def fwd_bwd():
            out = fn.superlinear_prefill(qr, kr, vr, qsr, cfg, pos, s0, scale)
            out.backward(grad)

        for on, label in ((False, "tl"), (True, "ws"), (False, "tl")):
            fn.WS_KEY_PASS = on
            row["fwd_bwd_ms"].setdefault(label, []).append(timed(f"forward + backward, dk/dv {label}", fwd_bwd, reps=3))

        def dense():
            out = torch.nn.functional.scaled_dot_product_attention(qr, kr, vr, is_causal=True, scale=scale,
                                                                   enable_gqa=True)
            out.backward(grad)

        row["dense_fwd_bwd_ms"] = timed("dense SDPA forward + backward", dense, reps=3)
    fn.WS_KEY_PASS = True
    return row


def main(argv: list[str] | None = None) -> int:
    return run_cases(argv, __doc__, one, WS_DKDV_TILES, "BM,BN,STAGES,REGS,LOADER_REGS", "backward")


if __name__ == "__main__":
    sys.exit(main())
