"""decode.log as numbers (decode.json) and the decode step against dense SDPA and the read floor (decode.png)."""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEAD = re.compile(r"(?P<setting>\w+) decode L=(?P<length>\d+) on (?P<card>.+?): (?P<keys>\d+) keys .* (?P<floor>[\d.]+) ms$")
TIME = re.compile(r"  (?P<what>.+?)\s+(?P<ms>[\d.]+) ms(?:  \(max \|diff\| (?P<diff>[\d.e+-]+)\))?$")

rows, row = [], None
for line in Path("decode.log").read_text().splitlines():
    if found := HEAD.match(line):
        row = {"setting": found["setting"], "length": int(found["length"]), "card": found["card"],
               "keys_per_head": int(found["keys"]), "read_floor_ms": float(found["floor"]), "times_ms": {}}
        rows.append(row)
    elif (found := TIME.match(line)) and row is not None:
        row["times_ms"][found["what"]] = float(found["ms"])
Path("decode.json").write_text(json.dumps({"source": "decode.log (README.md has the command)", "rows": rows},
                                          indent=1) + "\n")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
for ax, setting in zip(axes, ("released", "balanced")):
    mine = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["length"])
    lengths = [r["length"] for r in mine]
    for what, style in (("whole step", "o-"), ("partial + combine", "s--"), ("search (split, unmerged)", "v--"),
                        ("dense SDPA, every key", "^-")):
        ax.plot(lengths, [r["times_ms"][what] for r in mine], style, label=what)
    ax.plot(lengths, [r["read_floor_ms"] for r in mine], "k:", label="read floor at 4.8 TB/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("keys in the cache")
    ax.set_title(f"{setting}: one decode row, CUDA-graph replay")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("ms")
axes[0].legend(fontsize=8)
fig.suptitle(f"Decode against dense SDPA, {rows[0]['card']}")
fig.tight_layout()
fig.savefig("decode.png", dpi=110)
