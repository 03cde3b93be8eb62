"""Does the width of the block-totals programs change which spans the span-mean search selects?

For a few random draws of the GPU tests' benchmark shape (B=1, 32 query / 2 kv heads, D=128, bf16, keys with a common
part), the kernels' selection on sampled rows (`search_topk` over `key_prefix`) is compared with the float64
reference (`select_spans`) for each block-totals tiling. Every (row, head) whose selected anchors differ is kept with
the float64 scores of the candidates involved: a swap between candidates whose exact scores tie to ~1e-7 of the score
is rounding; a larger gap is a fault. Writes a JSON list of rows (every tiling, every draw)."""

import json
import sys
import time
import zlib

import torch
from slkernels import SuperlinearConfig
from slkernels.geometry import span_bounds
from slkernels.selection import select_spans
from slkernels.triton_ops import prefix as prefix_mod
from slkernels.triton_ops.prefix import key_prefix
from slkernels.triton_ops.search import search_topk

KEY_OFFSET = 1.5  # as tests/test_triton_gpu.py
SETTINGS = {
    "balanced": SuperlinearConfig(sw_index=31, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                                  forward_factor=0.0, search_key="span_mean"),
    "released": SuperlinearConfig(sw_index=65, num_spans=3, search_power=0.55, span_power=0.55, backward_factor=3.0,
                                  forward_factor=1.0, search_key="span_mean"),
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1, a small check of the script
TILINGS = [(32, 4), (128, 4), (128, 2)]


def draw(seed, length):
    g = torch.Generator(device=DEVICE).manual_seed(zlib.crc32(f"ties {seed} {length}".encode()))
    k = (torch.randn(1, 2, length, 128, device=DEVICE, generator=g) + KEY_OFFSET).bfloat16()
    qs = torch.randn(1, 32, length, 128, device=DEVICE, generator=g).bfloat16()
    rows = torch.cat([torch.arange(length - 32, length, device=DEVICE),
                      torch.randperm(length - 32, device=DEVICE, generator=g)[:ROWS]]).sort().values
    return k, qs, rows


def exact_scores(qs64, prefix64, cfg, pos, head, anchors):
    """float64 span-mean scores of one query row's anchors (s0 = 0), spans from `span_bounds`."""
    a = anchors.long()
    one = torch.ones_like(a)
    lo, hi = span_bounds(cfg, a, one * (pos + 1), one * 0, one * pos)
    mean = (prefix64[head // 16, hi + 1] - prefix64[head // 16, lo]) / (hi - lo + 1).double()[:, None]
    return mean @ qs64


def main(path, length=262144, seeds=(0, 1, 2)):
    global ROWS
    ROWS = min(992, length // 8)
    records = []
    for name, cfg in SETTINGS.items():
        for seed in seeds:
            k, qs, rows = draw(seed, length)
            first = torch.zeros(1, dtype=torch.int64, device=DEVICE)
            ref = select_spans(qs[:, :, rows].double(), k.double(), cfg, cache_position=rows).anchor[0]  # [H, R, k]
            k64 = k[0].double()
            prefix64 = torch.cat([torch.zeros(2, 1, 128, dtype=torch.float64, device=DEVICE), k64.cumsum(1)], 1)
            qs64 = qs[0, :, rows].double()
            for columns, warps in TILINGS:
                prefix_mod.TOTALS_COLUMNS, prefix_mod.TOTALS_WARPS = columns, warps
                t0 = time.time()
                anchors, _ = search_topk(qs[:, :, rows], k, cfg, rows, first, length, prefix=key_prefix(k, first))
                anchors = anchors[0].long()
                a_sorted, r_sorted = anchors.sort(-1).values, ref.sort(-1).values
                diff = (a_sorted != r_sorted).any(-1)  # [H, R]
                swaps = []
                for h, j in diff.nonzero().tolist():
                    mine, theirs = anchors[h, j], ref[h, j]
                    only_mine = mine[~torch.isin(mine, theirs)]
                    only_theirs = theirs[~torch.isin(theirs, mine)]
                    s_mine = exact_scores(qs64[h, j], prefix64, cfg, int(rows[j]), h, only_mine)
                    s_theirs = exact_scores(qs64[h, j], prefix64, cfg, int(rows[j]), h, only_theirs)
                    scale = qs64[h, j].norm().item() * (prefix64[h // 16, -1] / length).norm().item()
                    gap = s_theirs.min().item() - s_mine.max().item()  # >= 0: the reference ranks by these
                    swaps.append(dict(head=h, row=int(rows[j]), kernel=mine.tolist(), reference=theirs.tolist(),
                                      gap=gap, relative_gap=gap / scale))
                rec = dict(setting=name, seed=seed, length=length, columns=columns, warps=warps,
                           pairs=int(diff.numel()), differing=len(swaps),
                           largest_relative_gap=max((s["relative_gap"] for s in swaps), default=0.0),
                           swaps=swaps[:20], seconds=round(time.time() - t0, 1))
                records.append(rec)
                print(f"{name} seed {seed} {columns} cols/{warps} warps: {len(swaps)} of {diff.numel()} (row, head) "
                      f"differ, largest relative gap {rec['largest_relative_gap']:.2e}", flush=True)
            del k, qs, prefix64
            torch.cuda.empty_cache()
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", records=records), f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], *(int(x) for x in sys.argv[2:3]))
