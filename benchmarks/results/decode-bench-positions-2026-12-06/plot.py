"""Turns `ab-call1.jsonl` (ab_positions.py's lines) into `ab.json` (median microseconds a step per setting, length
and variant, with every round) and `ab.png`. Run from this folder: python plot.py"""

import json
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

rounds = defaultdict(list)
with open("ab-call1.jsonl") as f:
    for line in f:
        row = json.loads(line)
        if "us_per_step" in row:
            rounds[(row["setting"], row["length"], row["variant"])].append(row["us_per_step"])
card = open("card-call1.txt").read().strip().replace("\n", "; ")
summary = [{"setting": s, "length": n, "variant": v, "median_us": statistics.median(r), "rounds_us": r}
           for (s, n, v), r in sorted(rounds.items())]
with open("ab.json", "w") as f:
    json.dump({"card": card, "protocol": "16 steps over 16 caches in one CUDA graph, us per step", "rows": summary},
              f, indent=1)

variants = sorted({v for _, _, v in rounds})
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
for ax, setting in zip(axes, ("released", "balanced")):
    lengths = sorted({n for s, n, _ in rounds if s == setting})
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ys = [statistics.median(rounds[(setting, n, v)]) for n in lengths]
        ax.bar([j + i * width for j in range(len(lengths))], ys, width, label=v)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(lengths))], [f"{n // 1024}K" for n in lengths])
    ax.set_title(f"{setting}: decode step in a graph of 16 (median of 3)")
    ax.set_ylabel("us per step")
axes[0].legend(fontsize=7)
fig.suptitle(card, fontsize=8)
fig.tight_layout()
fig.savefig("ab.png", dpi=110)
print("wrote ab.json and ab.png")
