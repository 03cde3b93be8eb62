"""Where the time goes: each pass of the Triton forward/backward timed on its own (CUDA events).

    python benchmarks/profile_passes.py [released|balanced ...] [LENGTH ...] [--plain-loads] [--forward]
                                        [--span-mean] [--decode]  (default: both settings at 65536 and 262144)
Each attention and dk/dv pass is also timed under several tilings. Also prints the tile efficiency of the
span and window entry lists: attended keys over keys walked (a tile walks the union of its entries'
ranges). `--plain-loads` reads K/V without tensor descriptors, for a per-pass before/after; `--forward` stops
after the forward passes; `--span-mean` uses the span-mean search key (and also times the search's hi-only loop). The
search is also timed with its candidates in pieces of 48 anchors (the order that would keep a piece's rows in L2).
`--decode` times one decode row instead (CUDA-graph replays): the search, the two attention kernels, the whole step
and dense SDPA over every key, against the time to read the keys and values the row attends at the card's memory
bandwidth; then the two kernels under each tiling of VARIANTS["decode"] (a span's chunks) and of VARIANTS["decode
window"], the whole step under each search split of VARIANTS["decode search"], the search under each tiling of
VARIANTS["decode search tile"] and the whole step
with its kernels chained by programmatic dependent launch (VARIANTS["decode pdl"]) and under each program order of
the partial kernel (VARIANTS["decode order"]), each with the largest difference from the default's output (the
search's: its scores).
"""

from __future__ import annotations

import dataclasses
import sys
from unittest import mock

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import attend, decode
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.attend import MODE_DELTA, MODE_DQ, MODE_DQ_SPAN, MODE_FWD_SPAN, MODE_FWD_WINDOW, run_entries
from slkernels.triton_ops.common import tile_sizes
from slkernels.triton_ops.entries import build_geometry, span_entries, window_entries
from slkernels.triton_ops.search import search_topk
from slkernels.triton_ops.span_lists import span_lists
from slkernels.triton_ops.window_lists import window_lists

from slconvert.benchmark.timing import measure, measure_graph

# tilings timed per pass besides the default: (entries, keys, warps, stages[, register cap]); search: (anchors
# per block, warps)
VARIANTS = {
    "search": [(16, 1), (64, 2), (32, 2)],
    "window": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 32, 4, 3), (64, 64, 4, 2)],
    "span": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 32, 4, 3), (64, 64, 4, 2)],
    "dq span": [(64, 32, 4, 2), (64, 32, 4, 4), (64, 32, 4, 3, 168)],
    "dq window": [(64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 3)],
    "dkdv": [(64, 64, 4, 2), (64, 32, 4, 3), (64, 32, 4, 3, 168), (64, 32, 4, 4)],
    # decode's partial kernel: a span's (keys per chunk, keys per block, warps, stages), default decode.DECODE_TILE
    "decode": [(128, 16, 1, 2), (512, 16, 1, 2), (256, 16, 1, 1), (256, 16, 1, 3), (256, 32, 1, 2), (64, 16, 2, 2)],
    # decode's window chunks by KV head: (keys per chunk, keys per block, stages), default decode.WINDOW_TILE
    "decode window": [(64, 16, 2), (256, 16, 2), (128, 32, 2), (128, 16, 1), (128, 16, 3)],
    # decode's search pieces: (anchors per piece at least, pieces per row at most) (decode.SEARCH_SPLIT), timed as
    # the whole step; (128, 1 << 30): pieces of 128 anchors at every length
    "decode search": [(128, 1 << 30), (64, 32), (32, 64), (64, 16)],
    # decode's search tiling: (anchors per block, warps, stages) (decode.DECODE_SEARCH_TILE), timed as the search
    "decode search tile": [(16, 1, 2), (64, 1, 2), (32, 2, 2), (64, 2, 2), (32, 4, 2), (128, 4, 2), (32, 1, 1)],
    # decode's combine: (columns of D per program, warps) (decode.COMBINE_TILE), timed with the partial kernel
    "decode combine": [(128, 4), (64, 4), (32, 1), (32, 2)],
    # decode's three kernels chained by programmatic dependent launch or not (decode.DECODE_PDL forced each way; the
    # default, None, chains them where the window is grouped), timed as the whole step
    "decode pdl": [True, False],
    # the order in which decode's partial kernel starts its programs (decode.CHUNK_ORDER), timed as the whole step
    "decode order": [0, 1],
}


def timed(label, f, reps=3):
    f()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = []
    for _ in range(reps):
        a.record()
        out = f()
        b.record()
        torch.cuda.synchronize()
        best.append(a.elapsed_time(b))
    best.sort()
    print(f"  {label:44} {best[len(best) // 2]:9.3f} ms", flush=True)
    return out


def tile_efficiency(entries, block_m):
    lo, hi, count = entries.lo.long(), entries.hi.long(), entries.count.long()
    walked = attended = 0
    for g in range(lo.shape[0]):
        n = int(count[g])
        lg, hg = lo[g, :n], hi[g, :n]
        attended += int((hg - lg + 1).clamp_min(0).sum())
        pad = (-n) % block_m
        lt = torch.cat([lg, lg.new_full((pad,), 2**40)]).view(-1, block_m).amin(1)
        ht = torch.cat([hg, hg.new_full((pad,), -1)]).view(-1, block_m).amax(1)
        walked += int(((ht - lt + 1).clamp_min(0) * block_m).sum())
    return attended / max(walked, 1)


def inputs(length: int):
    """Fresh q, k, v, q_search (the benchmark shape of docs/semantics.md), positions and first real token."""
    q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.arange(length, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    return q, k, v, qs, pos, s0


def profile_one(name: str, cfg: SuperlinearConfig, length: int, forward_only: bool = False) -> None:
    print(f"{name} L={length} on {torch.cuda.get_device_name()}")
    q, k, v, qs, pos, s0 = inputs(length)
    scale = 128 ** -0.5
    anchors, scores = timed("search", lambda: search_topk(qs, k, cfg, pos, s0, length))
    # The candidates in pieces of 48 anchors, every row's first piece before any row's second (the grid's order), so
    # that a piece's keys or running sums stay in L2 (docs/semantics.md, the design note's last paragraph); unmerged,
    # so timing only (with the span mean each piece rescores its kept candidates).
    timed("search in pieces of 48, unmerged (timing)", lambda: search_topk(
        qs, k, cfg, pos, s0, length, split_candidates=48, merge=False))
    if cfg.search_key == "span_mean":  # the screening loop's cost (docs/semantics.md design note): not exact
        timed("search, hi parts only (timing)", lambda: search_topk(qs, k, cfg, pos, s0, length, hi_only=True))
        timed("search, hi parts only, in pieces of 48 (timing)", lambda: search_topk(
            qs, k, cfg, pos, s0, length, hi_only=True, split_candidates=48, merge=False))
    for bn, warps in VARIANTS["search"]:
        timed(f"search {bn} anchors x {warps} warps", lambda bn=bn, warps=warps: search_topk(
            qs, k, cfg, pos, s0, length, block_n=bn, num_warps=warps))
    geo = timed("geometry (torch, every span)", lambda: build_geometry(cfg, anchors, pos, s0, length))
    timed("span entries (torch, sort)", lambda: span_entries(geo, 2, 16, length))
    timed("window entries (torch, sort)", lambda: window_entries(geo, 2, 16))
    timed("window lists (one pass, sorted)", lambda: window_lists(cfg, pos, s0, 2, 16, sort=True))
    wins = timed("window lists (one pass)", lambda: window_lists(cfg, pos, s0, 2, 16))
    spans, gate, _ = timed("span lists (one pass, sort)", lambda: span_lists(cfg, length, anchors, scores, pos, s0, 2,
                                                                             length))
    lse_s = torch.empty_like(scores)
    span_o = torch.empty(*scores.shape, 128, device="cuda", dtype=q.dtype)
    timed("span attention", lambda: run_entries(MODE_FWD_SPAN, spans, q, k, v, scale, span_o=span_o, out_e=lse_s))
    for tiles in VARIANTS["span"]:
        timed(f"span attention {tiles}", lambda tiles=tiles: run_entries(
            MODE_FWD_SPAN, spans, q, k, v, scale, span_o=span_o, out_e=lse_s, tiles=tiles))
    o_w, out = torch.empty_like(q), torch.empty_like(q)
    lse_w = torch.empty(1, 32, length, device="cuda")
    timed("window attention", lambda: run_entries(MODE_FWD_WINDOW, wins, q, k, v, scale, o_w=o_w, lse_w=lse_w))
    for tiles in VARIANTS["window"]:
        timed(f"window attention {tiles}", lambda tiles=tiles: run_entries(
            MODE_FWD_WINDOW, wins, q, k, v, scale, o_w=o_w, lse_w=lse_w, tiles=tiles))
    timed("window attention, mixing the spans into the output", lambda: run_entries(
        MODE_FWD_WINDOW, wins, q, k, v, scale, span_o=span_o, out=out, gate=gate, lse_in=lse_s))
    u = torch.empty_like(scores)
    timed("span delta pass (no atomics)", lambda: run_entries(MODE_DELTA, spans, q, k, v, scale, do=q, lse_in=lse_s,
                                                              out_e=u))
    timed("whole forward", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length))
    timed("whole forward, no gradient", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length, False))
    rows = fn.inference_plan(q, k, cfg, s0)[0]
    timed(f"inference forward in {-(-length // rows)} chunks", lambda: fn.inference_forward(
        q, k, v, qs, cfg, pos, s0, scale, length))
    for label, run in (("one pass", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length, False)[0]),
                       ("in chunks", lambda: fn.inference_forward(q, k, v, qs, cfg, pos, s0, scale, length)),
                       ("dense SDPA", lambda: torch.nn.functional.scaled_dot_product_attention(
                           q, k, v, is_causal=True, scale=scale, enable_gqa=True))):
        peak = measure(run, budget_ms=0, warmup=0).peak_bytes / 2**30  # one call, its peak above the inputs
        print(f"  peak above the inputs, no gradient, {label:26} {peak:9.3f} GiB", flush=True)
    bm = tile_sizes(128)[0]
    print(f"  tile efficiency: window {tile_efficiency(wins, bm):.2f}, spans {tile_efficiency(spans, bm):.2f}")
    if forward_only:
        return
    qg, kg, vg, qsg = (x.clone().requires_grad_(True) for x in (q, k, v, qs))
    out, saved = fn.forward_pass(qg, kg, vg, qsg, cfg, pos, s0, scale, length)
    grad = torch.randn_like(out)
    timed("whole backward", lambda: fn.backward_pass(grad, qg, kg, vg, qsg, saved, scale))
    dq = torch.zeros(q.shape, dtype=torch.float32, device="cuda")
    span_e = torch.empty_like(saved["lse_s"])
    for tiles in [None, *VARIANTS["dq span"]]:
        timed(f"dq span, fused {tiles}", lambda tiles=tiles: run_entries(
            MODE_DQ_SPAN, spans, q, k, v, scale, do=grad, lse_in=saved["lse_s"], coef=saved["gate"],
            delta=saved["lse_s"], out_e=span_e, dq=dq, tiles=tiles))
    ones = torch.ones_like(saved["lse_w"])[..., None]
    for tiles in [None, *VARIANTS["dq window"]]:
        timed(f"dq window {tiles}", lambda tiles=tiles: run_entries(
            MODE_DQ, wins, q, k, v, scale, do=grad, lse_in=ones, coef=ones, delta=ones, dq=dq, tiles=tiles))
    from slkernels.triton_ops import attend_bwd
    from slkernels.triton_ops.attend_bwd import dkdv

    dk = torch.empty(k.shape, dtype=torch.float32, device="cuda")
    dv = torch.empty_like(dk)
    variants = [(None, "on"), *((tiles, "on") for tiles in VARIANTS["dkdv"]), (None, "off")]
    for tiles, rotation in variants:  # "off": every key block scans its entries from the first
        attend_bwd.ROTATION[0] = rotation
        label = f"{tiles}" + (", scan from the first entry" if rotation == "off" else "")
        timed(f"dkdv spans {label}", lambda tiles=tiles: dkdv(spans, q, k, v, q, saved["lse_s"], saved["gate"],
                                                              saved["lse_s"], dk, dv, scale, True, tiles=tiles))
        timed(f"dkdv window {label}", lambda tiles=tiles: dkdv(wins, q, k, v, q, ones, ones, ones, dk, dv, scale,
                                                               False, tiles=tiles))
    attend_bwd.ROTATION[0] = "on"


def profile_decode(name: str, cfg: SuperlinearConfig, length: int, bandwidth_gbs: float = 4800.0) -> None:
    """One decode row at `length` keys (B = 1, 32 / 2 heads, D = 128, bf16), each piece as a CUDA-graph replay:
    the split search, the partial and combine kernels (the search's lists fixed), and the whole step; beside them
    the time to read, once per query head, the window and the k spans at t = length at `bandwidth_gbs` (H200: 4.8
    TB/s), the floor the issue's decode targets are measured against."""
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.tensor([length - 1], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5

    def search():  # as the decode step calls it (SEARCH_SPLIT, DECODE_SEARCH_TILE), its pieces unmerged
        return decode.search_pieces(qs, k, cfg, pos, s0, length)

    def step():
        return decode.superlinear_decode(q, k, v, qs, cfg, pos, s0, scale)

    lists = search()

    def kernels():  # the partial and combine kernels alone: the search's lists as found above
        with mock.patch.object(decode, "search_topk", lambda *args, **kw: lists):
            return step()

    tables = decode.geometry_tables(cfg, length, q.device)
    keys = tables.width + cfg.num_spans * tables.span_length(length)
    floor_ms = 32 * keys * 128 * 2 * 2 / (bandwidth_gbs * 1e9) * 1e3  # K and V rows, bf16, per query head
    print(f"{name} decode L={length} on {torch.cuda.get_device_name()}: {keys} keys per query head "
          f"(window {tables.width}, {cfg.num_spans} spans of {tables.span_length(length)}), read once per head at "
          f"{bandwidth_gbs / 1000:.1f} TB/s: {floor_ms:.3f} ms")
    def dense():  # the dense step it replaces: SDPA of the one query over every key (GQA by broadcast)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)

    for label, f in (("search (split, unmerged)", search), ("partial + combine", kernels), ("whole step", step),
                     ("dense SDPA, every key", dense)):
        print(f"  {label:44} {_graph_ms(f)}", flush=True)
    # each alternative of a decode setting against its default's output: (label, setting, values, what is timed)
    sweeps = [("partial + combine {}", "DECODE_TILE", VARIANTS["decode"], kernels),
              ("partial + combine, window tiling {}", "WINDOW_TILE", VARIANTS["decode window"], kernels),
              ("partial + combine, combine tiling {}", "COMBINE_TILE", VARIANTS["decode combine"], kernels),
              ("whole step, search pieces {}", "SEARCH_SPLIT", VARIANTS["decode search"], step),
              ("search's scores, tiling {}", "DECODE_SEARCH_TILE", VARIANTS["decode search tile"],
               lambda: search()[1]),
              ("whole step, programmatic dependent launch {}", "DECODE_PDL", VARIANTS["decode pdl"], step),
              ("whole step, program order {}", "CHUNK_ORDER", VARIANTS["decode order"], step)]
    for label, setting, values, f in sweeps:
        reference = f().float()
        for value in values:
            with mock.patch.object(decode, setting, value):
                diff = float((f().float() - reference).abs().max())
                print(f"  {label.format(value):44} {_graph_ms(f)}  (max |diff| {diff:.1e})", flush=True)


def _graph_ms(f) -> str:
    ms = measure_graph(f)
    return "not capturable" if ms is None else f"{ms:9.3f} ms"


def main() -> None:
    if "--plain-loads" in sys.argv:
        attend.DESCRIPTORS[0] = "off"
    names = [x for x in sys.argv[1:] if x in ("released", "balanced")] or ["released", "balanced"]
    lengths = [int(x) for x in sys.argv[1:] if x.isdigit()] or [65536, 262144]
    for name in names:
        cfg = getattr(SuperlinearConfig, name)()
        if "--span-mean" in sys.argv:
            cfg = dataclasses.replace(cfg, search_key="span_mean")
            name = f"{name}, span_mean"
        for length in lengths:
            if "--decode" in sys.argv:
                profile_decode(name, cfg, length)
            else:
                profile_one(name, cfg, length, forward_only="--forward" in sys.argv)


if __name__ == "__main__":
    main()
