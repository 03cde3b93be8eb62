"""runs.json -> runs.png: the NIAH grid's average of each demo training run, grouped by its settings."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = Path(__file__).resolve().parent
runs = json.loads((here / "runs.json").read_text())["runs"]
labels = [r["settings"].replace(", ", ",\n") + f"\nseed {r['seed']}, {r['threads']} thread(s)" for r in runs]
colors = ["tab:green" if r["average"] >= 95 else "tab:red" for r in runs]
fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(runs)), 4.2))
ax.bar(range(len(runs)), [r["average"] for r in runs], color=colors)
for i, r in enumerate(runs):
    ax.text(i, r["average"] + 1.5, f"{r['average']:.1f}", ha="center", fontsize=8)
ax.set_xticks(range(len(runs)), labels, fontsize=7)
ax.set_ylim(0, 110)
ax.set_ylabel("NIAH exact match, % (40 prompts)")
ax.set_title("make demo's CPU training (400 steps, mixers, p = 0.5, W = 15, span-mean key), 2-core AMD EPYC")
fig.tight_layout()
fig.savefig(here / "runs.png", dpi=120)
