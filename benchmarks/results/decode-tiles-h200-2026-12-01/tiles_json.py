"""The decode sweep's logs as numbers (tiles.json) and the new default's times against the old (tiles.png)."""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = []
for log in sorted(Path(".").glob("*.log")):
    if log.name.startswith("gpu-"):
        continue
    head = None
    for line in log.read_text().splitlines():
        m = re.match(r"(\w+) decode L=(\d+) on (.+?): (\d+) keys .* ([\d.]+) ms$", line)
        if m:
            head = dict(file=log.name, setting=m[1], length=int(m[2]), card=m[3], keys_per_head=int(m[4]),
                        read_floor_ms=float(m[5]))
            continue
        m = re.match(r"  (.+?)\s+([\d.]+) ms(?:  \(max \|diff\| ([\d.e+-]+)\))?$", line)
        if m and head:
            rows.append({**head, "what": m[1].strip(), "ms": float(m[2]),
                         "max_abs_diff": None if m[3] is None else float(m[3])})
Path("tiles.json").write_text(json.dumps({"source": "the *.log files of this folder", "rows": rows}, indent=1) + "\n")
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
for ax, setting in zip(axes, ("released", "balanced")):
    new = [r for r in rows if r["file"] == "new-default.log" and r["setting"] == setting]
    lengths = sorted({r["length"] for r in new})
    for what, style in (("partial + combine", "o-"), ("partial + combine (512, 64, 4, 3)", "s--"), ("whole step", "^-")):
        pts = [(r["length"], r["ms"]) for r in new if r["what"] == what]
        label = {"partial + combine": "attention kernels, (128, 16, 1, 3)",
                 "partial + combine (512, 64, 4, 3)": "attention kernels, old (512, 64, 4, 3)",
                 "whole step": "whole step, (128, 16, 1, 3)"}[what]
        ax.plot(*zip(*pts), style, label=label)
    floor = sorted({(r["length"], r["read_floor_ms"]) for r in new})
    ax.plot(*zip(*floor), "k:", label="read floor at 4.8 TB/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(f"{setting}, one decode row (graph replay)")
    ax.set_xlabel("keys")
    ax.grid(True, alpha=0.3)
axes[0].set_ylabel("ms")
axes[0].legend(fontsize=8)
fig.suptitle(f"Decode tiling on {new[0]['card']}")
fig.tight_layout()
fig.savefig("tiles.png", dpi=100)
print(len(rows), "rows")
