"""summary.json and steps.png from step-compare.log: the graph-replayed decode step as one launch (one-launch.patch
on commit 72fc727) against 72fc727's three launches and dense SDPA, per setting and length; the sweeps of the
one-launch step in summary.json only."""
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).parent
rows = defaultdict(lambda: defaultdict(list))
for line in (HERE / "step-compare.log").read_text().splitlines():
    if line.startswith("{") and "ms" in (r := json.loads(line)):
        label = r["step"] + (f", {r['variant']}" if "variant" in r else "")
        rows[f"{r['setting']} {r['length']}"][label].append(round(r["ms"] * 1000, 1))
(HERE / "summary.json").write_text(json.dumps({"unit": "us, CUDA-graph replay, median of 100", "rows": rows},
                                              indent=1) + "\n")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
labels = (("three launches (72fc727)", "tab:gray"), ("one launch", "tab:red"), ("dense SDPA", "tab:orange"))
for ax, setting in zip(axes, ("released", "balanced")):
    for i, (label, color) in enumerate(labels):
        values = [min(rows[f"{setting} {n}"][label]) for n in (16384, 65536, 1 << 20)]
        bars = ax.bar([x + (i - 1) * 0.27 for x in range(3)], values, 0.27, label=label, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(3), ["16K", "64K", "1M"])
    ax.set_ylabel("us per step (best of two runs)")
    ax.set_title(f"decode of one token, {setting}, one H200", fontsize=9)
    ax.legend(fontsize=8)
fig.tight_layout()
out = HERE / "steps.png"
fig.savefig(out, dpi=110)
Image.open(out).convert("RGB").quantize(256).save(out)
