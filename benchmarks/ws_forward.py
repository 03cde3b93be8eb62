"""The warp-specialised forward passes (`slkernels.triton_ops.attend_ws`) against the `tl` entry kernel, on a GPU.

    python benchmarks/ws_forward.py [--check] [--forward] [--json FILE] [SETTING:LENGTH ...]
                                    [--tiles BM,BN,STAGES,REGS,PERSISTENT ...]

For each setting and length (default released:262144): the search and the entry lists as the forward builds them,
then the span pass and the window pass (mixing the spans into the output) by both kernels. Prints the largest
difference between their outputs (span outputs and log-sum-exps, the mixed output) and the median time of each
pass under each tiling of the warp-specialised kernel beside the `tl` kernel's default (each time includes zeroing
the pass's output buffers, the same for both kernels: about 6.4 GB for the span pass at 256K released). `--check`
compares only (small lengths, a quick test that the kernel neither hangs nor errs). `--forward` also times the whole forward
(`function.forward_pass`, with what the backward needs) with its span pass on each kernel, and dense SDPA.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from profile_passes import inputs, tile_efficiency  # benchmarks/ on the path
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.attend import MODE_FWD_SPAN, MODE_FWD_WINDOW, run_entries
from slkernels.triton_ops.attend_ws import WS_TILES, run_entries_ws
from slkernels.triton_ops.search import search_topk
from slkernels.triton_ops.span_lists import span_lists
from slkernels.triton_ops.window_lists import window_lists


def one(setting: str, length: int, tilings: list[tuple[int, ...]], check_only: bool, forward: bool) -> dict:
    cfg = getattr(SuperlinearConfig, setting)()
    print(f"{setting} L={length} on {torch.cuda.get_device_name()}", flush=True)
    q, k, v, qs, pos, s0 = inputs(length)
    scale = 128 ** -0.5
    anchors, scores = search_topk(qs, k, cfg, pos, s0, length)
    spans, gate, _ = span_lists(cfg, length, anchors, scores, pos, s0, 2, length)
    wins = window_lists(cfg, pos, s0, 2, 16)
    used = gate > 0  # the spans that exist (the others are never written)

    def span_pass(runner, tiles=None):
        span_o = torch.zeros(*scores.shape, 128, device="cuda", dtype=q.dtype)
        lse_s = torch.zeros_like(scores)
        runner(MODE_FWD_SPAN, spans, q, k, v, scale, span_o=span_o, out_e=lse_s, tiles=tiles)
        return span_o, lse_s

    def window_pass(runner, span_o, lse_s, tiles=None):
        out = torch.zeros_like(q)
        runner(MODE_FWD_WINDOW, wins, q, k, v, scale, span_o=span_o, out=out, gate=gate, lse_in=lse_s, tiles=tiles)
        return out

    ref_o, ref_lse = span_pass(run_entries)
    ref_out = window_pass(run_entries, ref_o, ref_lse)
    torch.cuda.synchronize()
    row = dict(setting=setting, length=length, tiles={}, device=torch.cuda.get_device_name(),
               tile_efficiency_spans={bm: tile_efficiency(spans, bm) for bm in (64, 128)},
               tile_efficiency_window={bm: tile_efficiency(wins, bm) for bm in (64, 128)})
    print(f"  tile efficiency, spans / window: 64 entries {row['tile_efficiency_spans'][64]:.3f} / "
          f"{row['tile_efficiency_window'][64]:.3f}, 128 entries {row['tile_efficiency_spans'][128]:.3f} / "
          f"{row['tile_efficiency_window'][128]:.3f}", flush=True)
    for tiles in tilings:
        o, lse = span_pass(run_entries_ws, tiles)
        out = window_pass(run_entries_ws, ref_o, ref_lse, tiles)
        torch.cuda.synchronize()
        diff = dict(span_o=float((o.float() - ref_o.float())[used].abs().max()),
                    lse=float((lse - ref_lse)[used].abs().max()),
                    out=float((out.float() - ref_out.float()).abs().max()))
        exact = diff["span_o"] < 0.05 and diff["lse"] < 1e-3 and diff["out"] < 0.05  # bf16 rounding of O(1) outputs
        print(f"  {tiles}: largest differences {diff} {'EXACT' if exact else 'WRONG'}", flush=True)
        row["tiles"][str(tiles)] = dict(diff=diff, exact=exact)
    if check_only:
        return row
    # the tl kernel before and after the others, to see drift within the run
    row["tl_span_ms"] = [timed("span pass, tl", lambda: span_pass(run_entries))]
    for tiles in tilings:
        row["tiles"][str(tiles)]["span_ms"] = timed(
            f"span pass, ws {tiles}", lambda t=tiles: span_pass(run_entries_ws, t))
    row["tl_span_ms"].append(timed("span pass, tl", lambda: span_pass(run_entries)))
    row["tl_window_ms"] = [timed("window pass, tl", lambda: window_pass(run_entries, ref_o, ref_lse))]
    for tiles in tilings:
        row["tiles"][str(tiles)]["window_ms"] = timed(
            f"window pass, ws {tiles}", lambda t=tiles: window_pass(run_entries_ws, ref_o, ref_lse, t))
    row["tl_window_ms"].append(timed("window pass, tl", lambda: window_pass(run_entries, ref_o, ref_lse)))
    if forward:
        row["forward_ms"] = {}
        for keys, label in ((0, "tl"), (1, "ws"), (0, "tl")):
            fn.WS_SPAN_MIN_KEYS = keys  # 1: the warp-specialised span pass at every length
            row["forward_ms"].setdefault(label, []).append(timed(
                f"whole forward, span pass {label}", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)))
        fn.WS_SPAN_MIN_KEYS = 0
        row["dense_ms"] = timed("dense SDPA", lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=True), reps=3)
    return row


def timed(label: str, f, reps: int = 5) -> float:
    """Median milliseconds of `f` over `reps` calls after one warm-up (CUDA events), printed."""
    f()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    ms = sorted(times)[reps // 2]
    print(f"  {label:44} {ms:9.3f} ms", flush=True)
    return ms


def run_cases(argv: list[str] | None, doc: str, one, default_tiles: tuple[int, ...], tiles_help: str,
              whole: str) -> int:
    """The command line of the warp-specialised kernels' benchmarks (this one, ws_dkdv.py, ws_span_dq.py): cases
    SETTING:LENGTH, --tiles, --check, the flag `whole` (also time the whole pass), --json (rewritten after each case).
    `one(setting, length, tilings, check_only, whole)` measures one case and returns its row."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["released:262144"])
    ap.add_argument("--tiles", nargs="*", default=None, help=tiles_help)
    ap.add_argument("--check", action="store_true")
    ap.add_argument(f"--{whole}", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    tilings = [tuple(int(x) for x in t.split(",")) for t in args.tiles] if args.tiles else [default_tiles]
    rows = []
    for case in args.cases:
        setting, length = case.split(":")
        rows.append(one(setting, int(length), tilings, args.check, getattr(args, whole)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cases(argv, __doc__, one, WS_TILES, "BM,BN,STAGES,REGS,PERSISTENT", "forward")


if __name__ == "__main__":
    sys.exit(main())
