"""summary.json and steps.png from the call logs: the decode step with the window's chunks by KV head and the spans'
finer chunks (this tree) against 83d4c17, with each setting forced, as graphs of one step (calls 1-3) and of 16 steps
over 16 caches (call 5, per step); call 4's split of the step into search, partial kernel and combine."""
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
LOGS = {"call 1 (compare-call1.log)": "compare-call1.log", "call 2 (compare-call2.log)": "compare-call2.log",
        "call 3 (compare-call3.log)": "compare-call3.log", "call 4 (step-parts-call4.log)": "step-parts-call4.log",
        "call 4 (compare-pdl-call4.log)": "compare-pdl-call4.log",
        "call 5, 16 steps a graph (compare-layers-call5.log)": "compare-layers-call5.log"}


def medians(name):
    got = defaultdict(lambda: defaultdict(list))
    for line in (HERE / name).read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("ms") is not None:
            r = json.loads(line)
            got[f"{r['setting']} {r['length']}"][r["step"]].append(round(r["ms"] * 1000, 1))
    return got


summary = {"unit": "us per step, CUDA-graph replay, median of 100, each measurement twice in turn",
           **{label: medians(name) for label, name in LOGS.items()}}
(HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharex=True)
for col, (label, lines) in enumerate(((
        "call 3 (compare-call3.log)", {"slkernels": "this tree", "slk_old": "83d4c17",
                                       "slkernels, WINDOW_GROUPS=True": "window by KV head, always",
                                       "slkernels, WINDOW_GROUPS=False": "window by query row, always",
                                       "dense SDPA": "dense SDPA"}),
        ("call 5, 16 steps a graph (compare-layers-call5.log)", {"slkernels": "this tree", "slk_old": "83d4c17",
                                                                "slkernels, DECODE_PDL=True": "this tree, PDL on",
                                                                "dense SDPA": "dense SDPA"}))):
    data = summary[label]
    for row, setting in enumerate(("released", "balanced")):
        ax = axes[row][col]
        keys = sorted((k for k in data if k.startswith(setting)), key=lambda k: int(k.split()[1]))
        lengths = [int(k.split()[1]) for k in keys]
        for step, name in lines.items():
            ax.plot(lengths, [min(data[k][step]) for k in keys], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{setting}, {'one step a graph' if col == 0 else '16 steps a graph, per step'}")
        ax.set_xlabel("keys in the cache")
        ax.set_ylabel("us per step (best of two medians)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
fig.suptitle("Decode step, B = 1, 32 query / 2 KV heads, D = 128, bf16, one NVIDIA H200 per call")
fig.tight_layout()
fig.savefig(HERE / "steps.png", dpi=110)
