"""Prints the per-step tables of this folder's compare_passes.py --decode logs (each step's times in us at each
length, both passes, and the largest difference of its outputs from the first step's), writes them all to
summary.json, and draws steps.png: time per step against cache length. Left: call 3, the committed
GATES_BEFORE_WAIT (slkernels) against False. Right: call 1, the spans' chunks of at least 4, 6 or 8 blocks and
SPAN_FILL 7 against the plan before (slkernels).

    python plot.py > tables.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = {"compare-call1": "the tree with SPAN_MIN_BLOCKS 1 (slkernels, the committed plan): chunks of at least 4, 6, "
                         "8 blocks, and SPAN_FILL 7",
        "compare-call2": "GATES_BEFORE_WAIT True, every program of the partial kernel letting the combine start after "
                         "its wait (slkernels), against False",
        "compare-call3": "GATES_BEFORE_WAIT True as committed, a window's program letting the combine start at its "
                         "start and a span's after its wait (slkernels), against False",
        "compare-call5": "commit 622d824 (slkernels, COMBINE_TILE (16, 1)): the combine's tiling (32, 1), (64, 2), "
                         "(128, 4)",
        "compare-call7": "the search's lists read from L2 in _top_of_pieces (slkernels) against commit 622d824 "
                         "(slk_old)"}

summary = decode_logs.summarize(HERE, LOGS)

panels = (("compare-call3", (("slkernels", "gates before the wait (kept)", "o-"),
                             ("slkernels, GATES_BEFORE_WAIT=False", "gates after the wait (before)", "s--"),
                             ("dense SDPA", "dense SDPA", "^-"))),
          ("compare-call1", (("slkernels", "chunks as committed", "o-"),
                             ("slkernels, SPAN_MIN_BLOCKS=6", "at least 6 blocks a chunk", "x:"),
                             ("slkernels, SPAN_FILL=7", "SPAN_FILL 7", "d:"),
                             ("dense SDPA", "dense SDPA", "^-"))))
decode_logs.draw_steps(HERE, summary, panels)
