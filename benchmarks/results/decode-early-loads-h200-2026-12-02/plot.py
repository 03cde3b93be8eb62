"""Prints the per-step tables of this folder's compare_passes.py --decode logs (each step's times in us at each
length, both passes, and the largest difference of its outputs from the first step's), writes them all to
summary.json, and draws steps.png: time per step against cache length. Left: call 4, decode.SPAN_FILL 10 (kept)
against 8 (before), 9 and 11. Right: call 2, the spans' chunks by KV head (exact, not kept) against a range's.

    python plot.py > tables.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = {"compare-call1": "the early loads (slk_new) against 0ea1d31 (slk_old); cover-v2.patch applied (slkernels)",
        "compare-call2": "the spans' chunks by KV head (kv-head-chunks.patch applied)",
        "compare-call3": "settings of the committed code (SPAN_FILL 8)",
        "compare-call4": "SPAN_FILL 10 in the tree (slkernels) against 8, 9, 11, 12",
        "compare-call5": "SPAN_FILL 10 in the tree: pipeline stages, SPAN_FILL 9, search pieces"}

summary = decode_logs.summarize(HERE, LOGS)

panels = (("compare-call4", (("slkernels", "SPAN_FILL 10 (kept)", "o-"), ("slkernels, SPAN_FILL=8", "8 (before)", "s--"),
                             ("slkernels, SPAN_FILL=9", "9", "d:"), ("slkernels, SPAN_FILL=11", "11", "x:"),
                             ("dense SDPA", "dense SDPA", "^-"))),
          ("compare-call2", (("slkernels, DECODE_COVER=False", "a range's chunks (kept)", "o-"),
                             ("slkernels, DECODE_COVER=True; COVER_TILE=(2, 32, 4, 3)",
                              "a KV head's chunks, best tiling (not kept)", "x:"),
                             ("dense SDPA", "dense SDPA", "^-"))))
decode_logs.draw_steps(HERE, summary, panels)
