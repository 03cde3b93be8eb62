"""The search's candidates cut into pieces (`search_topk(split_candidates=N)`), timed against one program walking all
of a row's candidates: with the rows of one piece in flight together, the keys they gather lie in a range of about
o(i1) - o(i0) + (rows in flight) positions instead of the whole prefix, so they may stay in L2. One layer, B=1,
32/2 heads, D=128, bf16, the released or balanced setting, the query rows of one inference chunk (the last, and one
in the middle) and of the whole length; medians of REPS synchronised calls; the merged selection compared with the
unsplit one (anchors equal, scores' largest difference). One JSON line per result.

    python search_split.py SETTING LENGTH [REPS]
"""
import json
import statistics
import sys

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.search import search_topk

setting, length = sys.argv[1], int(sys.argv[2])
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 9
cfg = getattr(SuperlinearConfig, setting)()
torch.manual_seed(0)
qs = torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
first_real = torch.zeros(1, dtype=torch.int64, device="cuda")
rows = fn.inference_chunk_rows(length, cfg.num_spans)
parts = {"last_chunk": slice(length - rows, length), "middle_chunk": slice(length // 2 - rows, length // 2),
         "whole": slice(0, length)}


def timed(f):
    f()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


for name, part in parts.items():
    q_part = qs[:, :, part]
    positions = torch.arange(part.start, part.stop, device="cuda")
    base_a, base_s = search_topk(q_part, k, cfg, positions, first_real, length)
    for split in (None, 32, 64, 128, 256, 512):
        def merged(split=split, q_part=q_part, positions=positions):
            return search_topk(q_part, k, cfg, positions, first_real, length, split_candidates=split)

        def pieces(split=split, q_part=q_part, positions=positions):
            return search_topk(q_part, k, cfg, positions, first_real, length, split_candidates=split, merge=False)

        a, s = merged()
        print(json.dumps({"setting": setting, "length": length, "rows": name, "split": split,
                          "merged_ms": timed(merged), "kernel_ms": timed(pieces) if split else None,
                          "anchors_equal": bool(torch.equal(a, base_a)),
                          "score_max_diff": float((s - base_s).abs().max())}), flush=True)
