"""Does the span-mean search read its shared running-sum rows once when a row runs beside the row whose spans
start where its own end (`search.shared_end_order`)? At each length and setting (32 / 2 heads, D = 128, bf16, the
benchmark inputs of docs/semantics.md): the search alone in row order and in that order, whole chains and in
segments of 4, 8 and 16 rows (exact span mean, its hi-only loop, the anchor key), the selections compared to the
bit; then the whole forward (with gradients kept, `forward_pass`; without, `inference_forward` in chunks) for the
anchor key and the span mean in row order and in shared-end order, whole chains and segments of 8
(`function.SHARED_END_MIN_ROWS` None or 0, `function.SHARED_END_SEGMENT`).
One JSON line per timing (median of five calls, ms).

    python shared_ends.py [LENGTH ...] [released|balanced ...] [--no-forward] [--no-search]
"""

import dataclasses
import json
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops import search

from slconvert.benchmark.timing import measure

lengths = [int(a) for a in sys.argv[1:] if a.isdigit()] or [262144]
settings = [a for a in sys.argv[1:] if a in ("released", "balanced")] or ["released"]
forward = "--no-forward" not in sys.argv
searches = "--no-search" not in sys.argv
SEGMENTS = (None, 4, 8, 16)  # of the search's timings
FORWARD_ORDERS = ((None, None), (0, None), (0, 8))  # (SHARED_END_MIN_ROWS, SHARED_END_SEGMENT) of the forwards


def timed(f) -> float:
    """Median ms of five synchronised calls after a warm-up (`slconvert.benchmark.timing.measure`)."""
    return measure(f, max_reps=4).ms


def emit(**row):
    print(json.dumps(row), flush=True)


def measure_length(length: int) -> None:
    torch.manual_seed(0)
    q = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
    qs = torch.randn_like(q)
    k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    pos = torch.arange(length, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5
    for setting in settings:
        base = getattr(SuperlinearConfig, setting)()
        orders = {m: search.shared_end_order(base, pos, s0, length, m) for m in SEGMENTS}
        emit(length=length, setting=setting, what="order build", ms=timed(
            lambda base=base: search.shared_end_order(base, pos, s0, length)))
        for key, extra in (("anchor", {}), ("span_mean hi-only", {"hi_only": True}), ("span_mean", {}))[:3 * searches]:
            cfg = dataclasses.replace(base, search_key=key.split()[0])
            kw = dict(extra)
            if cfg.search_key == "span_mean":
                kw["prefix"] = search.key_prefix(k, s0)
            plain = search.search_topk(qs, k, cfg, pos, s0, length, **kw)
            for name, o in [("rows", None)] + [(f"shared ends, segment {m}", orders[m]) for m in SEGMENTS]:
                got = search.search_topk(qs, k, cfg, pos, s0, length, row_order=o, **kw)
                same = all(torch.equal(x, y) for x, y in zip(plain, got))
                ms = timed(lambda cfg=cfg, kw=kw, o=o: search.search_topk(qs, k, cfg, pos, s0, length, row_order=o,
                                                                          **kw))
                emit(length=length, setting=setting, what="search", key=key, order=name, ms=ms, bit_equal=same)
        if not forward:
            continue
        ref = None
        for key, (threshold, segment) in [("anchor", (None, None))] + [("span_mean", o) for o in FORWARD_ORDERS]:
            cfg = dataclasses.replace(base, search_key=key)
            fn.SHARED_END_MIN_ROWS, fn.SHARED_END_SEGMENT = threshold, segment
            name = f"shared ends, segment {segment}" if threshold is not None else "rows"
            out = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length, False)[0]
            if key == "span_mean" and threshold is None:
                ref = out
            same = bool(torch.equal(out, ref)) if key == "span_mean" else None
            emit(length=length, setting=setting, what="forward", key=key, order=name, bit_equal=same,
                 ms=timed(lambda cfg=cfg: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)))
            emit(length=length, setting=setting, what="inference forward", key=key, order=name,
                 ms=timed(lambda cfg=cfg: fn.inference_forward(q, k, v, qs, cfg, pos, s0, scale, length)))
        fn.SHARED_END_MIN_ROWS = fn.SHARED_END_SEGMENT = None


emit(card=torch.cuda.get_device_name(), torch=torch.__version__)
for length in lengths:
    measure_length(length)
