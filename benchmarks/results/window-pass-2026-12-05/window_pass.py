"""The forward's window pass (the `tl` entry kernel, MODE_FWD_WINDOW, mixing a row's spans into the output) of this
tree against another copy's (`slkernels_head`, the kernels before the change) in one process, on a GPU: one layer,
B=1, 32/2 heads, D=128, bf16, fresh random inputs, each length's route and span pass run once and shared.

For each setting and length: the window pass as the inference forward launches it (output only) and as the
forward with gradients does (o_w and lse_w stored too), under the default tiling of both copies and the tilings in
TILINGS of this tree's kernel (and with plain loads in place of tensor descriptors); the outputs compared with the
head copy's; then the whole forward without gradients of both copies, alternated call by call. One JSON line per
result; medians of synchronised calls. With --ncu: one launch of each copy's default window pass and nothing else
(the first two launches of `_entry_kernel`, for Nsight Compute).

    python window_pass.py [--ncu] [SETTING:LENGTH ...]      (default released:262144 released:65536 released:16384
                                                     balanced:262144)
"""
import importlib
import json
import statistics
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import attend, function
from slkernels.triton_ops.window_lists import window_lists

NCU = "--ncu" in sys.argv
head = importlib.import_module("slkernels_head")
attend_head = importlib.import_module("slkernels_head.triton_ops.attend")

# (entries, keys, warps, stages[, register cap]) of this tree's window pass besides its default (64, 64, 4, 3)
TILINGS = [(64, 64, 4, 2), (64, 64, 4, 1), (64, 128, 4, 1), (64, 128, 4, 2), (32, 64, 4, 1), (32, 64, 4, 2),
           (32, 128, 4, 1), (128, 64, 8, 1), (128, 128, 8, 1), (128, 128, 8, 2), (64, 64, 4, 1, 168)]


def timed(fn, reps=15, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        e0.record()
        fn()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times), min(times), max(times)


def emit(**row):
    print(json.dumps(row), flush=True)


def one(setting: str, length: int) -> None:
    cfg = getattr(SuperlinearConfig, setting)()
    torch.manual_seed(0)
    q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.arange(length, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5
    with torch.no_grad():
        routed = function.route(qs, k, cfg, pos, s0, length)
        lse_s, gate = routed["lse_s"], routed["gate"]
        span_o = torch.empty(*lse_s.shape, 128, dtype=q.dtype, device=q.device)
        span_pass = attend.run_entries
        if function.ws_span_pass(q, k, v, cfg, length):
            from slkernels.triton_ops.attend_ws import run_entries_ws as span_pass
        span_pass(attend.MODE_FWD_SPAN, routed["spans"], q, k, v, scale, span_o=span_o, out_e=lse_s)
        wins = window_lists(cfg, pos, s0, 2, 16)
        torch.cuda.synchronize()

        def window(module, tiles=None, with_ow=False):
            out = torch.empty_like(q)
            extra = {}
            if with_ow:
                extra = dict(o_w=torch.empty_like(q), lse_w=torch.empty(1, 32, length, device="cuda"))
            return out, lambda: module.run_entries(attend.MODE_FWD_WINDOW, wins, q, k, v, scale, span_o=span_o, out=out,
                                                   gate=gate, lse_in=lse_s, tiles=tiles, **extra)

        ref_out, ref_run = window(attend_head)
        ref_run()
        if NCU:  # one launch of each copy's default window pass, for Nsight Compute, and nothing else
            window(attend)[1]()
            torch.cuda.synchronize()
            return
        for with_ow in (False, True):
            cases = [("head", attend_head, None), ("this", attend, None)]
            cases += [("this", attend, t) for t in TILINGS] if not with_ow else []
            for name, module, tiles in cases:
                out, run = window(module, tiles, with_ow)
                try:
                    ms, lo, hi = timed(run)
                except Exception as exc:  # a tiling that does not fit this card: its row says why
                    emit(setting=setting, length=length, pass_="window", kernels=name, tiles=tiles, with_ow=with_ow,
                         error=f"{type(exc).__name__}: {str(exc)[:160]}")
                    continue
                emit(setting=setting, length=length, pass_="window", kernels=name, tiles=tiles, with_ow=with_ow,
                     median_ms=ms, min_ms=lo, max_ms=hi, equal_to_head=bool(torch.equal(out, ref_out)),
                     max_abs_diff=float((out.float() - ref_out.float()).abs().max()))
        attend.DESCRIPTORS[0] = "off"
        out, run = window(attend)
        ms, lo, hi = timed(run)
        attend.DESCRIPTORS[0] = "on"
        emit(setting=setting, length=length, pass_="window", kernels="this", tiles="plain loads", median_ms=ms,
             min_ms=lo, max_ms=hi, max_abs_diff=float((out.float() - ref_out.float()).abs().max()))

        packages = {"head": head, "this": sys.modules["slkernels"]}
        outs = {n: m.superlinear_attention(q, k, v, qs, getattr(m.SuperlinearConfig, setting)(), backend="triton")
                for n, m in packages.items()}
        emit(setting=setting, length=length, pass_="forward", max_abs_diff=float(
            (outs["this"].float() - outs["head"].float()).abs().max()), equal=bool(torch.equal(*outs.values())))
        del outs
        times = {n: [] for n in packages}
        for _ in range(9 if length >= 131072 else 25):
            for n, m in packages.items():
                c = getattr(m.SuperlinearConfig, setting)()
                times[n].append(timed(lambda m=m, c=c: m.superlinear_attention(q, k, v, qs, c, backend="triton"), 1, 0)[0])
        for n, t in times.items():
            emit(setting=setting, length=length, pass_="forward", kernels=n, median_ms=statistics.median(t),
                 min_ms=min(t), max_ms=max(t))
        dense = timed(lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=True), 5 if length >= 131072 else 15, 1)
        emit(setting=setting, length=length, pass_="forward", kernels="dense SDPA", median_ms=dense[0],
             min_ms=dense[1], max_ms=dense[2])


if __name__ == "__main__":
    emit(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=importlib.import_module("triton").__version__)
    jobs = [a for a in sys.argv[1:] if ":" in a] or ["released:262144", "released:65536", "released:16384",
                                                     "balanced:262144"]
    for job in jobs:
        s, n = job.split(":")
        one(s, int(n))
