"""Prints the per-step tables of this folder's compare_passes.py --decode logs (each step's times in us at each
length, both passes, and the largest difference of its outputs from the first step's), writes them all to
summary.json, and draws steps.png: time per step against cache length. Left: call 4, the committed span loop in two
stages with chunks of about 256 keys (slkernels) against commit a067b88 (slk_old, a plain loop). Right: call 2,
the pipeline stages of the span loop (three stages in the tree, windows by query row sharing the loop).

    python plot.py > tables.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = {"compare-call1": "span-trim.patch applied (slkernels) against d254ce3 (slk_old)",
        "compare-call2": "the span loop pipelined, 3 stages, windows by row in the same loop (slkernels), against "
                         "a067b88 (slk_old); stages, SPAN_FILL, chunk length and window stages as variants",
        "compare-call3": "2 stages, shared loop (slkernels) against the loops apart (slk_split) and a067b88 (slk_old); "
                         "chunks of 256 and 64 keys, SPAN_FILL 8 and 9",
        "compare-call4": "the loops apart, 2 stages, chunks of 256 keys (slkernels) against a067b88 (slk_old); chunks "
                         "of 128 and 512",
        "compare-call5": "the same tree: the grouped window in 2 stages, SPAN_FILL 6 and 12, blocks of 32 keys",
        "compare-call6": "the tree as committed (window in 2 stages): SPAN_FILL 8 and 7"}

summary = decode_logs.summarize(HERE, LOGS)

panels = (("compare-call4", (("slkernels", "two stages, chunks of 256 (kept)", "o-"),
                             ("slk_old", "a plain loop, chunks of 128 (before)", "s--"),
                             ("slkernels, DECODE_TILE=(128, 16, 1, 2)", "two stages, chunks of 128", "d:"),
                             ("dense SDPA", "dense SDPA", "^-"))),
          ("compare-call2", (("slk_old", "a plain loop (before)", "s--"),
                             ("slkernels, DECODE_TILE=(128, 16, 1, 2)", "two stages", "o-"),
                             ("slkernels", "three stages", "x:"),
                             ("slkernels, DECODE_TILE=(128, 16, 1, 4)", "four stages", "v:"),
                             ("dense SDPA", "dense SDPA", "^-"))))
decode_logs.draw_steps(HERE, summary, panels)
