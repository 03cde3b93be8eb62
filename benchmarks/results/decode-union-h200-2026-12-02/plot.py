"""Prints the per-step tables of this folder's compare_passes.py --decode logs (each step's times in us at each
length, both passes, and the largest difference of its outputs from the first step's), writes them all to
summary.json, and draws steps.png: time per step against cache length. Left: call 1, the two cuts of item 32 against
the code before them (136853b). Right: call 4, the cover layout (exact) against the per-range chunks.

    python plot.py > tables.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = {"compare-cuts-call1": "valid", "compare-cover-call2": "void: the cover read wrong rows' spans",
        "compare-cover-call4": "valid"}


summary = decode_logs.summarize(HERE, LOGS, "status")

panels = (("compare-cuts-call1", (("slkernels", "with the two cuts (kept)", "o-"), ("slk_old", "before them (136853b)", "s--"),
                                  ("dense SDPA", "dense SDPA", "^-"))),
          ("compare-cover-call4", (("slkernels, DECODE_COVER=False", "per-range chunks (kept)", "o-"),
                                   ("slkernels, DECODE_COVER=True", "cover: a KV head's keys once (not kept)", "x:"),
                                   ("dense SDPA", "dense SDPA", "^-"))))
decode_logs.draw_steps(HERE, summary, panels)
