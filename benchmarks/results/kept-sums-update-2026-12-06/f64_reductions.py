"""Reductions and scans of 64-bit floats along a tile's first axis in Triton on this card, against torch: the
largest relative error of tl.cumsum, tl.sum and tl.max over [T, 32] tiles (float64, and float32 as the control),
for 1 and 4 warps. Prints one JSON line per case and writes them to ARGV[1]."""
import json
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _reduce(X, OUT, T: tl.constexpr, DC: tl.constexpr, OP: tl.constexpr):
    rows = tl.arange(0, T)
    cols = tl.arange(0, DC)
    x = tl.load(X + rows[:, None] * DC + cols[None, :])
    if OP == 0:
        tl.store(OUT + rows[:, None] * DC + cols[None, :], tl.cumsum(x, axis=0))
    elif OP == 1:
        tl.store(OUT + cols, tl.sum(x, axis=0))
    else:
        tl.store(OUT + cols, tl.max(x, axis=0))


rows = []
gen = torch.Generator(device="cuda").manual_seed(0)
for dtype in (torch.float64, torch.float32):
    for tile in (16, 64):
        for warps in (1, 4):
            x = torch.randn(tile, 32, device="cuda", dtype=dtype, generator=gen) + 3.0
            for op, name in enumerate(("cumsum", "sum", "max")):
                want = (x.cumsum(0), x.sum(0), x.amax(0))[op]
                out = torch.empty_like(want)
                _reduce[(1,)](x, out, T=tile, DC=32, OP=op, num_warps=warps)
                error = float(((out - want).abs() / want.abs().clamp_min(1e-30)).max())
                rows.append(dict(dtype=str(dtype).split(".")[-1], tile=tile, warps=warps, op=name,
                                 max_rel_error=error))
                print(json.dumps(rows[-1]), flush=True)
json.dump({"card": torch.cuda.get_device_name(), "triton": triton.__version__, "rows": rows}, open(sys.argv[1], "w"),
          indent=1)
