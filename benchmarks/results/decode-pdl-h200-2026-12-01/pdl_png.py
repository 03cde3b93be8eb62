"""The whole decode step with and without programmatic dependent launch, from decode.json (pdl.png)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = json.loads(Path("decode.json").read_text())["rows"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, setting in zip(axes, ("released", "balanced")):
    mine = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["length"])
    x = range(len(mine))
    for shift, what, label in ((-0.2, "whole step", "plain launches"),
                               (0.2, "whole step, programmatic dependent launch True", "programmatic dependent launch")):
        ax.bar([i + shift for i in x], [r["times_ms"][what] * 1000 for r in mine], width=0.4, label=label)
    ax.set_xticks(list(x), [f"{r['length'] // 1024}K" for r in mine])
    ax.set_xlabel("keys in the cache")
    ax.set_title(f"{setting}: whole decode step, CUDA-graph replay")
    ax.grid(axis="y", alpha=0.3)
axes[0].set_ylabel("us per step")
axes[0].legend(fontsize=8)
fig.suptitle(f"Decode step with and without programmatic dependent launch, {rows[0]['card']}")
fig.tight_layout()
fig.savefig("pdl.png", dpi=110)
