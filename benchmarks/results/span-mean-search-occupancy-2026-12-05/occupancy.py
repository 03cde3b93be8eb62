"""Does the exact span-mean search gain from more warps per SM? Nsight Compute (the shared-end folder's call 2)
found it at 12.5% occupancy, 200 registers a thread in one-warp programs, with DRAM at 49% and L2 at 77% of their
peaks: latency-bound, not bandwidth-bound. At 256K released and balanced (32 / 2 heads, D = 128, bf16): the search
with its tiling (16 anchors, 1 warp, 2 stages) against register caps (`maxnreg`) and one stage, the registers and
spills of each build, selections and scores compared to the default to the bit. Then the bare hi-only loop (not
exact; its variants compared with its own default) under the same knobs, and the whole forward with the fastest
bit-equal variant of the exact search. One JSON line per variant.

    python occupancy.py [LENGTH]
"""

import dataclasses
import json
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops import search

from slconvert.benchmark.timing import measure

length = next((int(a) for a in sys.argv[1:] if a.isdigit()), 262144)
VARIANTS = [  # (anchors a block, warps, stages, maxnreg)
    (16, 1, 2, None), (16, 1, 1, None), (16, 1, 2, 168), (16, 1, 2, 128), (16, 1, 1, 128), (16, 1, 2, 96),
    (16, 2, 2, 128), (16, 2, 1, 128), (16, 2, 2, None), (32, 2, 2, None), (32, 2, 2, 128), (8, 1, 2, None),
    (8, 1, 1, 128), (16, 1, 2, None)]

original = search._search_kernel
extra: dict = {}
built: list = []
rows: list = []


class Capped:
    """`search._search_kernel` with launch options added (maxnreg), keeping the compiled kernel it returns."""

    def __getitem__(self, grid):
        launch = original[grid]

        def run(*args, **kwargs):
            compiled = launch(*args, **kwargs, **extra)
            built.append(compiled)
            return compiled
        return run


search._search_kernel = Capped()
print(json.dumps({"card": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
torch.manual_seed(0)
qs = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
pos = torch.arange(length, device="cuda")
s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
prefix = search.key_prefix(k, s0)
HI_VARIANTS = [(16, 1, 2, None), (16, 1, 1, None), (16, 2, 2, None), (16, 2, 1, None), (32, 1, 2, None),
               (32, 2, 2, None), (32, 4, 2, None), (16, 1, 2, 64)]
for setting, hi_only in (("released", False), ("balanced", False), ("released", True)):
    cfg = dataclasses.replace(getattr(SuperlinearConfig, setting)(), search_key="span_mean")
    extra.clear()
    plain = search.search_topk(qs, k, cfg, pos, s0, length, prefix=prefix, hi_only=hi_only)
    for block_n, warps, stages, maxnreg in HI_VARIANTS if hi_only else VARIANTS:
        extra.clear()
        if maxnreg is not None:
            extra["maxnreg"] = maxnreg
        row = dict(length=length, setting=setting, hi_only=hi_only, block_n=block_n, warps=warps, stages=stages, maxnreg=maxnreg)
        try:
            def call(cfg=cfg, block_n=block_n, warps=warps, stages=stages, hi_only=hi_only):
                return search.search_topk(qs, k, cfg, pos, s0, length, prefix=prefix, block_n=block_n,
                                          num_warps=warps, num_stages=stages, hi_only=hi_only)
            built.clear()
            got = call()
            compiled = built[-1]
            row["registers"] = getattr(compiled, "n_regs", None)
            row["spills"] = getattr(compiled, "n_spills", None)
            row["bit_equal"] = all(torch.equal(x, y) for x, y in zip(plain, got))
            row["ms"] = measure(call, max_reps=5).ms
        except Exception as error:  # a variant the compiler refuses is a row too
            row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
        print(json.dumps(row), flush=True)
        rows.append(row)

# The whole forward (gradients kept, `forward_pass`) at 256K released: the anchor key, the span mean with the
# default tiling, and the span mean with the fastest bit-equal variant of the released rows.
released = [r for r in rows if r["setting"] == "released" and not r["hi_only"] and r.get("bit_equal") and "ms" in r]
best = min(released, key=lambda r: r["ms"])
q = torch.randn_like(qs)
v = torch.randn_like(k)
base = SuperlinearConfig.released()
for key, variant in (("anchor", None), ("span_mean", None), ("span_mean", best)):
    cfg = dataclasses.replace(base, search_key=key)
    extra.clear()
    saved = dict(search.SEARCH_TILES)
    if variant is not None:
        search.SEARCH_TILES["span_mean"] = (variant["block_n"], variant["warps"], variant["stages"])
        if variant["maxnreg"] is not None:
            extra["maxnreg"] = variant["maxnreg"]
    ms = measure(lambda cfg=cfg: fn.forward_pass(q, k, v, qs, cfg, pos, s0, 128 ** -0.5, length), max_reps=4).ms
    search.SEARCH_TILES.update(saved)
    print(json.dumps(dict(length=length, setting="released", what="forward", key=key,
                          variant=None if variant is None else {x: variant[x] for x in
                                                                ("block_n", "warps", "stages", "maxnreg")},
                          ms=ms)), flush=True)
