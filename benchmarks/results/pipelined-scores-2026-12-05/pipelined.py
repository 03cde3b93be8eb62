"""The forward passes of the `tl` entry kernel with the next key block's scores issued before this block's softmax
(`attend.PIPELINE_SCORES`, PIPE_QK, which pipelined-scores.patch adds) against the plain loop, in one process on a
GPU: one layer, B=1, 32/2 heads, D=128, bf16, fresh random inputs; each length's route run once and shared.

For each setting and length: the span pass on the `tl` kernel and the window pass (mixing the spans, output only),
each under TILINGS with the plain loop and the pipelined one, outputs compared to the bit; then the whole forward
without gradients (the span pass on whichever kernel the forward picks) with each loop, alternated call by call,
and dense SDPA. One JSON line per result; medians of synchronised calls.

    python pipelined.py [SETTING:LENGTH ...]   (default released:262144 released:65536 released:16384
                                                balanced:262144 balanced:65536)
"""
import importlib
import json
import statistics
import sys

import torch
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.triton_ops import attend, function
from slkernels.triton_ops.window_lists import window_lists

# (entries, keys, warps, stages): the default first
TILINGS = [None, (64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3)]


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


def pipelined(on: bool) -> None:
    attend.PIPELINE_SCORES[0] = on


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
        lse_s, gate, spans = routed["lse_s"], routed["gate"], routed["spans"]
        wins = window_lists(cfg, pos, s0, 2, 16)
        span_o = torch.empty(*lse_s.shape, 128, dtype=q.dtype, device=q.device)

        def span_pass(tiles, o, lse):
            return lambda: attend.run_entries(attend.MODE_FWD_SPAN, spans, q, k, v, scale, span_o=o, out_e=lse,
                                              tiles=tiles)

        def window_pass(tiles, out):
            return lambda: attend.run_entries(attend.MODE_FWD_WINDOW, wins, q, k, v, scale, span_o=span_o, out=out,
                                              gate=gate, lse_in=lse_s, tiles=tiles)

        pipelined(False)
        span_pass(None, span_o, lse_s)()  # the spans' outputs every window pass below mixes
        ref_span, ref_lse = span_o.clone(), lse_s.clone()
        ref_out = torch.empty_like(q)
        window_pass(None, ref_out)()
        for name in ("span", "window"):
            for tiles in TILINGS:
                for on in (False, True):
                    pipelined(on)
                    if name == "span":
                        o, lse = torch.empty_like(span_o), torch.empty_like(lse_s)
                        run = span_pass(tiles, o, lse)
                    else:
                        o = torch.empty_like(q)
                        run = window_pass(tiles, o)
                    try:
                        ms, lo, hi = timed(run, 10 if length >= 131072 else 20)
                    except Exception as exc:  # a tiling this card cannot launch: its row says why
                        emit(setting=setting, length=length, pass_=name, tiles=tiles, pipelined=on,
                             error=f"{type(exc).__name__}: {str(exc)[:160]}")
                        continue
                    ref = ref_span if name == "span" else ref_out
                    row = dict(setting=setting, length=length, pass_=name, tiles=tiles, pipelined=on, median_ms=ms,
                               min_ms=lo, max_ms=hi, equal_to_plain_default=bool(torch.equal(o, ref)),
                               max_abs_diff=float((o.float() - ref.float()).abs().max()))
                    if name == "span":
                        row["lse_equal"] = bool(torch.equal(lse, ref_lse))
                    emit(**row)
        pipelined(False)

        def forward():
            return superlinear_attention(q, k, v, qs, cfg, backend="triton")

        outs = {}
        for on in (False, True):
            pipelined(on)
            outs[on] = forward()
        emit(setting=setting, length=length, pass_="forward", equal=bool(torch.equal(outs[False], outs[True])),
             max_abs_diff=float((outs[False].float() - outs[True].float()).abs().max()))
        del outs
        times = {False: [], True: []}
        for _ in range(9 if length >= 131072 else 25):
            for on in (False, True):
                pipelined(on)
                times[on].append(timed(forward, 1, 0)[0])
        pipelined(False)
        for on, t in times.items():
            emit(setting=setting, length=length, pass_="forward", pipelined=on, median_ms=statistics.median(t),
                 min_ms=min(t), max_ms=max(t))
        dense = timed(lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=True), 5 if length >= 131072 else 15, 1)
        emit(setting=setting, length=length, pass_="forward", kernels="dense SDPA", median_ms=dense[0],
             min_ms=dense[1], max_ms=dense[2])


if __name__ == "__main__":
    emit(card=torch.cuda.get_device_name(), torch=torch.__version__,
         triton=importlib.import_module("triton").__version__)
    jobs = [a for a in sys.argv[1:] if ":" in a] or ["released:262144", "released:65536", "released:16384",
                                                     "balanced:262144", "balanced:65536"]
    for job in jobs:
        s, n = job.split(":")
        one(s, int(n))
