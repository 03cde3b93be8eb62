"""Does the order of a search's pieces move its rate? The search at 256K (32 / 2 heads, D = 128, bf16, the benchmark
inputs of docs/semantics.md) with its candidates in pieces of 48 to 384 anchors, in two grid orders: `slkernels`
(every row's piece 1 before any row's piece 2: a piece's keys or running sums could stay in L2) and `slk_flip` (this
folder's piece-fastest.patch: a row's pieces next to each other, the order with no such reuse). Same pieces, same
work; only the order differs. The span-mean key's hi-only loop (timing only, not exact), its exact search, and the
anchor key's search; one piece is the committed search. One JSON line per timing (median of 5, ms).

    python search_order.py [LENGTH] [released|balanced]
"""

import dataclasses
import importlib
import json
import sys

import torch

length = int(next((a for a in sys.argv[1:] if a.isdigit()), 262144))
setting = next((a for a in sys.argv[1:] if a in ("released", "balanced")), "released")
packages = [p for p in ("slkernels", "slk_flip") if importlib.util.find_spec(p)]


def timed(f, reps=5):
    f()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[reps // 2]


torch.manual_seed(0)
qs = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
pos = torch.arange(length, device="cuda")
s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
print(json.dumps({"card": torch.cuda.get_device_name(), "length": length, "setting": setting}), flush=True)
for name in packages:
    pkg = importlib.import_module(name)
    search = importlib.import_module(f"{name}.triton_ops.search")
    base = getattr(pkg.SuperlinearConfig, setting)()
    for key, extra in (("anchor", {}), ("span_mean hi-only", {"hi_only": True}), ("span_mean", {})):
        cfg = dataclasses.replace(base, search_key=key.split()[0])
        prefix = search.key_prefix(k, s0) if cfg.search_key == "span_mean" else None
        for piece in (None, 48, 96, 192, 384):
            kw = dict(extra, prefix=prefix) if prefix is not None else dict(extra)
            if piece:
                kw.update(split_candidates=piece, merge=False)
            ms = timed(lambda search=search, cfg=cfg, kw=kw: search.search_topk(qs, k, cfg, pos, s0, length, **kw))
            print(json.dumps({"package": name, "key": key, "piece": piece, "ms": ms}), flush=True)
