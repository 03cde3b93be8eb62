"""Prints the per-step tables of this folder's compare_passes.py --decode logs (each step's times in us at each
length, both passes, and the largest difference of its outputs from the first step's), writes them all to
summary.json, and draws steps.png: time per step against cache length. Left: call 2, LONG_SPAN_BLOCKS (6, 40) and
(6, 48) against the plan before (slkernels). Right: call 1, the window's programs prefetching the spans' keys into
L2 (PREFETCH_L2) against no prefetch (slkernels).

    python plot.py > tables.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = {"compare-call1": "the tree with PREFETCH_L2 0 (slkernels, no prefetch): 0.45 (16K), 1.4 (16K-64K), and 0.45 "
                         "with span chunks of at least 6 blocks",
        "compare-call2": "the tree with LONG_SPAN_BLOCKS None (slkernels, the plan before): (6, 40) (kept) and (6, 48)"}

summary = decode_logs.summarize(HERE, LOGS)

panels = (("compare-call2", (("slkernels", "chunks as before", "o-"),
                             ("slkernels, LONG_SPAN_BLOCKS=(6, 40)", "(6, 40) (kept)", "x:"),
                             ("slkernels, LONG_SPAN_BLOCKS=(6, 48)", "(6, 48)", "d:"),
                             ("dense SDPA", "dense SDPA", "^-"))),
          ("compare-call1", (("slkernels", "no prefetch", "o-"),
                             ("slkernels, PREFETCH_L2=0.45", "prefetch, caches <= 0.45 L2", "x:"),
                             ("slkernels, PREFETCH_L2=1.4", "prefetch, caches <= 1.4 L2", "d:"),
                             ("dense SDPA", "dense SDPA", "^-"))))
decode_logs.draw_steps(HERE, summary, panels)
