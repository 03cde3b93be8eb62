"""Prints the per-step tables of this folder's compare_passes.py --decode logs (each setting's times in us at each
length, both passes, and the largest difference of its outputs from the first package's), writes them all to
summary.json, and draws steps.png: time per step against cache length, call 3 (the code as committed with and
without programmatic dependent launch, dense SDPA) and call 1 (the merge by a row's last program).

    python plot.py
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
import decode_logs  # noqa: E402

LOGS = ["compare-layers-call1", "compare-layers-call2", "compare-layers-call3", "compare-tiles-call3"]


def read(name: str):
    return decode_logs.read(HERE / f"{name}.log")


summary = {}
for name in LOGS:
    times, diffs, steps = read(name)
    print(f"== {name}")
    summary[name] = decode_logs.rows(times, diffs)
    decode_logs.print_table(times, diffs, steps, 52)
(HERE / "summary.json").write_text(json.dumps(summary, indent=1))

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, setting in zip(axes, ("released", "balanced")):
    for name, step, label, style in (
            ("compare-layers-call3", "slkernels", "PDL on (committed where the window is grouped)", "o-"),
            ("compare-layers-call3", "slkernels, DECODE_PDL=False", "PDL off", "s--"),
            ("compare-layers-call1", "slkernels", "merge by a row's last program (call 1)", "x:"),
            ("compare-layers-call3", "dense SDPA", "dense SDPA", "k^-")):
        times, _, _ = read(name)
        ax.plot(*decode_logs.points(times, setting, step), style, label=label)
    decode_logs.step_axes(ax, "cache length (tokens)", f"{setting}, B=1, 32/2 heads, D=128, bf16, H200", 8)
fig.tight_layout()
fig.savefig(HERE / "steps.png", dpi=110)
