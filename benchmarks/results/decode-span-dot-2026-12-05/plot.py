"""Prints the per-step tables of call 1's compare_passes.py --decode log (each step's times in us at each length,
both passes, and the largest difference of its outputs from the code before), writes them to summary.json, and
draws steps.png: time per step against cache length, the code before (spans on the CUDA cores) against a span's
chunks on the tensor cores (SPAN_DOT) where the window was grouped, everywhere, and everywhere with the window
grouped everywhere (the default since), beside dense SDPA.

    python plot.py > tables.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = {"compare-call1": "the code before (slkernels: SPAN_DOT False) against SPAN_DOT None, True, True with the "
                         "window grouped everywhere (kept), and None with SPAN_FILL 7"}

summary = decode_logs.summarize(HERE, LOGS)

panels = (("compare-call1", (("slkernels", "CUDA cores (before)", "o-"),
                             ("slkernels, SPAN_DOT=None", "tensor cores where grouped", "x:"),
                             ("slkernels, SPAN_DOT=True; WINDOW_GROUPS=True", "tensor cores, window grouped (kept)",
                              "d-"),
                             ("dense SDPA", "dense SDPA", "^-"))),)
decode_logs.draw_steps(HERE, summary, panels)
