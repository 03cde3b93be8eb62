"""The anchor key's gate backward (`slkernels.triton_ops.attend_bwd.gate_backward`): the sorted key side against the
atomic one, on a GPU.

    python benchmarks/gate_bwd.py [--json FILE] [--blocks BN,BM ...] [--backward] [--profile] [SETTING:LENGTH ...]

For each setting and length (default released:262144): one forward and backward as training runs them, recording
the backward's gate call (q_search, the anchors, the score gradients). The call is replayed into copies of the
float32 dk with `GATE_KEY_SIDE` "atomic" and "sorted" (each `--blocks` keys per program and selections per tile):
the largest difference of dk's added part and of d q_search relative to their largest elements, the median time of
each, and the sorted side's steps alone (the first kernel writing the sort keys, the sort, the block bounds, the
key-block kernel). `--backward` also times the whole backward and forward + backward with each side, and dense
SDPA's; `--profile` prints the CUDA kernels of one forward + backward (torch.profiler), largest first.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from profile_passes import inputs  # benchmarks/ on the path
from slkernels import SuperlinearConfig
from slkernels.triton_ops import attend_bwd as ab
from slkernels.triton_ops import function as fn
from ws_forward import timed


def recorded_gate_call(cfg, q, k, v, qs, pos, s0, scale, length, grad):
    """(q_search, k, anchors, dscore) of the backward's gate call."""
    calls = []
    original = fn.gate_backward

    def record(q_search, k_, anchors, dscore, dk, **kw):
        calls.append((q_search, k_, anchors, dscore.clone()))
        return original(q_search, k_, anchors, dscore, dk, **kw)

    out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
    fn.gate_backward = record
    try:
        fn.backward_pass(grad, q, k, v, qs, saved, scale)
    finally:
        fn.gate_backward = original
    return calls[0]


def one(setting: str, length: int, blocks: list[tuple[int, int]], backward: bool, profile: bool) -> dict:
    cfg = getattr(SuperlinearConfig, setting)()
    print(f"{setting} L={length} on {torch.cuda.get_device_name()}", flush=True)
    q, k, v, qs, pos, s0 = inputs(length)
    grad = torch.randn_like(q)
    scale = 128 ** -0.5
    q_search, k_, anchors, dscore = recorded_gate_call(cfg, q, k, v, qs, pos, s0, scale, length, grad)
    base = torch.randn(k.shape, dtype=torch.float32, device=k.device)
    row = dict(setting=setting, length=length, device=torch.cuda.get_device_name(),
               selections=int((anchors >= 0).sum()), sorted={})

    def run(side: str, bn: int | None = None, bm: int | None = None):
        ab.GATE_KEY_SIDE[0] = side
        if bn:
            ab.GATE_KEY_BLOCK, ab.GATE_SEL_BLOCK = bn, bm
        dk = base.clone()
        dqs = ab.gate_backward(q_search, k_, anchors, dscore, dk)
        return dk, dqs

    ref_dk, ref_dqs = run("atomic")
    added = ref_dk - base
    for bn, bm in blocks:
        dk, dqs = run("sorted", bn, bm)
        diff_dk = float((dk - ref_dk).abs().max() / added.abs().max())
        diff_dqs = float((dqs.float() - ref_dqs.float()).abs().max() / ref_dqs.float().abs().max())
        ok = diff_dk < 1e-4 and diff_dqs == 0.0
        print(f"  sorted ({bn}, {bm}): dk {diff_dk:.2e}, d q_search {diff_dqs:.2e} of the largest element "
              f"{'EXACT' if ok else 'WRONG'}", flush=True)
        row["sorted"][f"{bn},{bm}"] = dict(diff_dk=diff_dk, diff_dqs=diff_dqs, exact=ok)
    row["atomic_ms"] = [timed("gate backward, atomic", lambda: run("atomic"))]
    for bn, bm in blocks:
        row["sorted"][f"{bn},{bm}"]["ms"] = timed(f"gate backward, sorted ({bn}, {bm})",
                                                  lambda bn=bn, bm=bm: run("sorted", bn, bm))
    row["atomic_ms"].append(timed("gate backward, atomic", lambda: run("atomic")))

    # the sorted side's steps, with the first tiling
    bn, bm = blocks[0]
    ab.GATE_KEY_BLOCK, ab.GATE_SEL_BLOCK = bn, bm
    steps = {}
    keys = {}
    original = ab._gate_key_side

    def keys_only(q_search_, dscore_, keys_, dk_):
        keys["keys"] = keys_

    ab.GATE_KEY_SIDE[0], ab._gate_key_side = "sorted", keys_only
    try:
        steps["first kernel (d q_search, sort keys)"] = timed(
            "first kernel (d q_search, sort keys)", lambda: ab.gate_backward(q_search, k_, anchors, dscore, base.clone()))
    finally:
        ab._gate_key_side = original
    steps["clone of dk (in every timing above)"] = timed("clone of dk (in every timing above)", lambda: base.clone())
    steps["sort"] = timed("sort of the keys", lambda: torch.sort(keys["keys"]))
    steps["key side (sort, bounds, key-block kernel)"] = timed(
        "key side (sort, bounds, key-block kernel)", lambda: ab._gate_key_side(q_search, dscore, keys["keys"], base.clone()))
    row["sorted_steps_ms"] = steps

    if backward:
        _, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        row["backward_ms"], row["fwd_bwd_ms"] = {}, {}
        for side in ("atomic", "sorted", "atomic", "sorted"):
            ab.GATE_KEY_SIDE[0] = side
            row["backward_ms"].setdefault(side, []).append(timed(
                f"whole backward, {side}", lambda: fn.backward_pass(grad, q, k, v, qs, saved, scale), reps=3))
        del saved
        qr, kr, vr, qsr = (x.detach().requires_grad_() for x in (q, k, v, qs))

        def fwd_bwd():
            out = fn.superlinear_prefill(qr, kr, vr, qsr, cfg, pos, s0, scale)
            out.backward(grad)

        for side in ("atomic", "sorted", "atomic", "sorted"):
            ab.GATE_KEY_SIDE[0] = side
            row["fwd_bwd_ms"].setdefault(side, []).append(timed(f"forward + backward, {side}", fwd_bwd, reps=3))
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            fwd_bwd()
            torch.cuda.synchronize()
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                fwd_bwd()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="device_time_total", row_limit=40, max_name_column_width=60)
            print(table, flush=True)
            row["profile"] = [dict(name=e.key, calls=e.count, cuda_ms=e.device_time_total / 1e3)
                              for e in prof.key_averages()]

        def dense():
            out = torch.nn.functional.scaled_dot_product_attention(qr, kr, vr, is_causal=True, scale=scale,
                                                                   enable_gqa=True)
            out.backward(grad)

        row["dense_fwd_bwd_ms"] = timed("dense SDPA forward + backward", dense, reps=3)
    ab.GATE_KEY_SIDE[0] = "sorted"
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["released:262144"])
    ap.add_argument("--blocks", nargs="*", default=None, help="BN,BM: keys per program, selections per tile")
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    blocks = ([tuple(int(x) for x in b.split(",")) for b in args.blocks] if args.blocks
              else [(ab.GATE_KEY_BLOCK, ab.GATE_SEL_BLOCK)])
    rows = []
    for case in args.cases:
        setting, length = case.split(":")
        rows.append(one(setting, int(length), blocks, args.backward, args.profile))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
