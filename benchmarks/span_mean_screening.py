"""How exact would a cheaper span-mean search be? A CPU model of screening formats for the search's running sums.

The span-mean search (docs/semantics.md, design note) gathers, per candidate, two rows of the centred running sums P
(`slkernels.triton_ops.prefix`): four 16-bit rows today (hi and lo of each end), two in the `hi_only` timing loop,
against one 16-bit key row for the anchor key. On an H200 the loop follows its gathered bytes (61.3 ms with four
rows, 28.4 with two, 11.0 for the anchor key at 256K released), and within 10% of the anchor's forward needs about
the anchor's bytes per candidate. This script measures, on the benchmark's inputs (random normal bf16 keys and
search queries, H_q 32 / H_kv 2, D 128), how far screened scores from cheaper formats fall from the exact ones, and
how often a screening pass that keeps the best `k + m` candidates, rescores those exactly and bounds every dropped
one by its screened score plus a worst-case error cannot certify the exact top k (those (row, head) pairs would be
searched again with the exact loop):

* `fp16_hi`: the `hi` part of scale * P (the timed hi-only loop): 2 x 2 bytes per sum element and candidate;
* `fp8_local<B>`: P relative to a base row every B keys (P[x] - P[B floor(x / B)], the bases kept in float32, one
  product with q per base and row, looked up per candidate), the remainder in float8 e4m3 with a power-of-two scale
  per (kv head, block): 2 x 1 bytes per element and candidate, the anchor key's bytes. The search query is rounded
  to e4m3 as well (a float8 tensor-core product takes both operands in float8).

Worst-case bounds: a float16 value is within 2^-11 of itself relative (normal range), an e4m3 value within 2^-4
(plus 2^-10 absolute below 2^-6, its subnormals); a product's error is bounded by the L2 norms of the rounding
errors, which are at most the relative bound times the norms of the rounded vectors.

Usage: python benchmarks/span_mean_screening.py [--length 262144] [--rows 128] [--out results/x.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from slkernels import SuperlinearConfig  # noqa: E402
from slkernels.geometry import anchor_table, span_bounds  # noqa: E402

SHAPES = {"released": SuperlinearConfig.released, "balanced": SuperlinearConfig.balanced}
E4M3_MAX, E4M3_REL, E4M3_SUB = 448.0, 2.0 ** -4, 2.0 ** -10
FP16_REL = 2.0 ** -11


def candidate_spans(cfg, pos: int):
    """The first and last key of the span each candidate anchor of the query at `pos` would open (s0 = 0), by the
    kernels' own geometry."""
    t = torch.tensor(pos + 1)
    anchors = pos + 1 - anchor_table(cfg, pos + 1)
    return span_bounds(cfg, anchors, t, torch.tensor(0), torch.tensor(pos))


def pow2_scale(peak: torch.Tensor, limit: float) -> torch.Tensor:
    """The largest power of two s with s * peak <= limit (elementwise; peak > 0)."""
    return torch.exp2(torch.floor(torch.log2(limit / peak.clamp(min=1e-30))))


def e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.float().to(torch.float8_e4m3fn).double()


def e4m3_error_bound(x: torch.Tensor) -> torch.Tensor:
    """A bound on |e4m3(x) - x| per element (x already scaled into e4m3's range)."""
    return torch.maximum(E4M3_REL * x.abs(), torch.full_like(x, E4M3_SUB))


class Formats:
    """The running sums of one kv head in every screening format, and a screened score with its error bound."""

    def __init__(self, keys: torch.Tensor, blocks: list[int]):
        k = keys.double()
        k = k - k.mean(dim=0)
        self.P = torch.cat([torch.zeros(1, k.shape[1], dtype=torch.float64), k.cumsum(dim=0)])
        peak = self.P.abs().max()
        self.hi_scale = pow2_scale(peak, 2.0 ** 14)
        self.hi = (self.P * self.hi_scale).half().double() / self.hi_scale
        self.local = {}
        for block in blocks:
            base_index = (torch.arange(self.P.shape[0]) // block) * block
            rest = self.P - self.P[base_index]
            groups = rest.split(block)
            scales = torch.cat([pow2_scale(g.abs().max(), E4M3_MAX).expand(g.shape[0]) for g in groups])
            scaled = rest * scales[:, None]
            self.local[block] = (base_index, e4m3(scaled) / scales[:, None],
                                 e4m3_error_bound(scaled).norm(dim=1) / scales)

    def exact(self, q, st, en):
        n = (en - st + 1).double()
        return (self.P[en + 1] - self.P[st]) @ q.T / n[:, None]

    def fp16_hi(self, q, st, en):
        n = (en - st + 1).double()
        got = (self.hi[en + 1] - self.hi[st]) @ q.T / n[:, None]
        ends = self.hi[en + 1].norm(dim=1) + self.hi[st].norm(dim=1)
        bound = FP16_REL * ends[:, None] * q.norm(dim=1)[None, :] / n[:, None]
        return got, bound

    def fp8_local(self, block, q, st, en):
        base_index, rounded, err_norm = self.local[block]
        n = (en - st + 1).double()
        qs = pow2_scale(q.abs().amax(dim=1, keepdim=True), E4M3_MAX)
        q8 = e4m3(q * qs) / qs
        q_err = (e4m3_error_bound(q * qs) / qs).norm(dim=1)
        base = (self.P[base_index[en + 1]] - self.P[base_index[st]]) @ q.T  # float32 bases, exact products
        rest = rounded[en + 1] - rounded[st]
        got = (base + rest @ q8.T) / n[:, None]
        # |q8 . r8 - q . r| <= |q8 - q| |r8| + |q| |r8 - r|, r the exact remainder difference
        r_err = err_norm[en + 1] + err_norm[st]
        bound = (q_err[None, :] * rest.norm(dim=1)[:, None] + q.norm(dim=1)[None, :] * r_err[:, None]) / n[:, None]
        return got, bound


def certify(exact: torch.Tensor, screened: torch.Tensor, bound: torch.Tensor, k: int, keep: int) -> torch.Tensor:
    """Per head (column): True when keeping the `keep` best screened candidates, rescoring them exactly and bounding
    every dropped one by screened + bound proves the exact top k: the k-th best kept exact score beats every bound."""
    c = exact.shape[0]
    if c <= keep:
        return torch.ones(exact.shape[1], dtype=torch.bool)
    order = screened.argsort(dim=0, descending=True)
    kept, dropped = order[:keep], order[keep:]
    kth = exact.gather(0, kept).topk(k, dim=0).values[-1]
    ceiling = (screened + bound).gather(0, dropped).max(dim=0).values
    return kth > ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=262144)
    parser.add_argument("--rows", type=int, default=128, help="query rows sampled from the second half")
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--blocks", default="256,1024,4096")
    parser.add_argument("--keep-extra", default="0,2,5,8,12")
    parser.add_argument("--shapes", default="released,balanced")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    blocks = [int(x) for x in args.blocks.split(",")]
    extras = [int(x) for x in args.keep_extra.split(",")]
    gen = torch.Generator().manual_seed(args.seed)
    L, D, group = args.length, args.dim, args.heads // args.kv_heads
    keys = torch.randn(args.kv_heads, L, D, generator=gen).bfloat16()
    rows = torch.randint(L // 2, L, (args.rows,), generator=gen).sort().values
    q_search = torch.randn(args.heads, args.rows, D, generator=gen).bfloat16().double()
    started = time.time()
    formats = [Formats(keys[h], blocks) for h in range(args.kv_heads)]
    names = ["fp16_hi"] + [f"fp8_local{b}" for b in blocks]
    result = {"settings": vars(args) | {"out": str(args.out)}, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "bytes_per_element_and_candidate": {"anchor": 2, "exact_span_mean": 8,
                                                                               "fp16_hi": 4,
                                                                               **{f"fp8_local{b}": 2 for b in blocks}},
              "shapes": {}}
    for shape in args.shapes.split(","):
        cfg = SHAPES[shape]()
        k = cfg.num_spans
        err2 = {name: 0.0 for name in names}
        spread2, bound_sum, count = 0.0, {name: 0.0 for name in names}, 0
        undecided = {name: {m: 0 for m in extras} for name in names}
        pairs, candidates = 0, 0
        for r, pos in enumerate(rows.tolist()):
            st, en = candidate_spans(cfg, pos)
            candidates += st.numel()
            for h in range(args.kv_heads):
                fm, q = formats[h], q_search[h * group:(h + 1) * group, r]
                exact = fm.exact(q, st, en)
                spread2 += exact.var(dim=0).sum().item()
                runs = {"fp16_hi": fm.fp16_hi(q, st, en)}
                runs.update({f"fp8_local{b}": fm.fp8_local(b, q, st, en) for b in blocks})
                for name, (got, bound) in runs.items():
                    err2[name] += (got - exact).pow(2).mean(dim=0).sum().item()
                    bound_sum[name] += bound.mean().item() * group
                    for m in extras:
                        undecided[name][m] += int((~certify(exact, got, bound, k, k + m)).sum())
                pairs += group
                count += group
            if r % 16 == 15:
                print(f"{shape}: {r + 1}/{args.rows} rows, {time.time() - started:.0f} s", flush=True)
        spread = math.sqrt(spread2 / count)
        result["shapes"][shape] = {
            "k": k, "candidates_per_row": candidates / args.rows, "pairs": pairs, "score_spread_rms": spread,
            "formats": {name: {"error_rms_over_spread": math.sqrt(err2[name] / count) / spread,
                               "mean_bound_over_spread": bound_sum[name] / count / spread,
                               "undecided_share": {f"k+{m}": undecided[name][m] / pairs for m in extras}}
                        for name in names},
        }
        print(f"\n{shape} (k = {k}, {candidates / args.rows:.0f} candidates per row, {pairs} (row, head) pairs):")
        print("| format | bytes | error rms / spread | bound / spread | " +
              " | ".join(f"undecided, k+{m} kept" for m in extras) + " |")
        print("|---|---|---|---|" + "---|" * len(extras))
        for name in names:
            f = result["shapes"][shape]["formats"][name]
            cells = " | ".join(f"{100 * f['undecided_share'][f'k+{m}']:.2f}%" for m in extras)
            print(f"| {name} | {result['bytes_per_element_and_candidate'][name]} | {f['error_rms_over_spread']:.2e} | "
                  f"{f['mean_bound_over_spread']:.2e} | {cells} |")
    result["seconds"] = time.time() - started
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
