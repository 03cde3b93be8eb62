"""The kept-sums update's tiling on this card: `KeySums.update` over a 1M-key cache (B=1, 2 KV heads, D=128, bf16)
after one new key, and its block-totals pass alone, for each block-totals tiling (columns a chunk, warps) and tile of
the compare and bounds kernels. Prints one JSON line per setting and writes them to ARGV[1] (JSON). The tiles other
than 64 run only with the module's own totals setting (as first written: 128 columns and 8 warps after the loop
before them had left those set)."""
import json
import sys

import torch
from slkernels.triton_ops import prefix


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


length = 1 << 20
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
first = torch.zeros(1, dtype=torch.int64, device="cuda")
rows = []
for tile in (64, 32, 128):
    for columns, warps in ((32, 4), (64, 2), (64, 4), (128, 2), (128, 4), (128, 8)):
        if tile != 64 and (columns, warps) != (prefix.TOTALS_COLUMNS, prefix.TOTALS_WARPS):
            continue
        prefix.TILE, prefix.TOTALS_COLUMNS, prefix.TOTALS_WARPS = tile, columns, warps
        tiling = prefix._tiling(128, None)
        totals = timed(lambda tiling=tiling: prefix._block_totals(k, first, tiling, absolute=True, weighted=True))
        sums = prefix.KeySums()

        def step(sums=sums):
            k[:, :, -1] += 1
            sums.update(k, first)

        update = timed(step)
        gbps = k.numel() * k.element_size() / totals / 1e6
        rows.append(dict(tile=tile, columns=columns, warps=warps, totals_ms=round(totals, 4),
                         totals_GBps=round(gbps), update_ms=round(update, 4)))
        print(json.dumps(rows[-1]), flush=True)
json.dump({"card": torch.cuda.get_device_name(), "length": length, "rows": rows}, open(sys.argv[1], "w"), indent=1)
