"""What bounds the span-mean search at 256K released: one launch of the search kernel per key and row order, for
Nsight Compute (`call2.sh`). Keys: the anchor key, the span mean's hi-only loop, the exact span mean; orders: rows
and `search.shared_end_order` (whole chains). Same inputs as `shared_ends.py`.

    python ncu_search.py [LENGTH] [released|balanced]
"""

import dataclasses
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import search

length = next((int(a) for a in sys.argv[1:] if a.isdigit()), 262144)
setting = next((a for a in sys.argv[1:] if a in ("released", "balanced")), "released")
torch.manual_seed(0)
qs = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
pos = torch.arange(length, device="cuda")
s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
base = getattr(SuperlinearConfig, setting)()
chains = search.shared_end_order(base, pos, s0, length)
prefix = search.key_prefix(k, s0)
for key, extra in (("anchor", {}), ("span_mean", {"hi_only": True}), ("span_mean", {})):
    cfg = dataclasses.replace(base, search_key=key)
    kw = dict(extra, prefix=prefix) if key == "span_mean" else {}
    for order in (None, chains):
        search.search_topk(qs, k, cfg, pos, s0, length, row_order=order, **kw)
        torch.cuda.synchronize()
        print(key, extra, "rows" if order is None else "chains", flush=True)
