"""screen.log as numbers (screen.json) and the searches' times side by side (screen.png)."""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEAD = re.compile(r"(?P<setting>\w+) L=(?P<length>\d+) on (?P<card>.+?): span-mean screening$")
TIME = re.compile(r"  (?P<what>\S.+?)\s+(?P<ms>[\d.]+) ms$")
CHECK = re.compile(r"    rows with other anchors (?P<other>\d+) of (?P<rows>\d+); max \|score diff\| (?P<diff>\S+); "
                   r"programs left to the second launch (?P<flagged>\d+) of (?P<programs>\d+)$")
rows, row, last = [], None, None
for line in Path("screen.log").read_text().splitlines():
    if found := HEAD.match(line):
        row = {"setting": found["setting"], "length": int(found["length"]), "card": found["card"], "times_ms": {},
               "screening_checks": {}}
        rows.append(row)
    elif (found := TIME.match(line)) and row is not None:
        last = found["what"]
        row["times_ms"][last] = float(found["ms"])
    elif (found := CHECK.match(line)) and row is not None:
        row["screening_checks"][last] = {"rows_with_other_anchors": int(found["other"]), "rows": int(found["rows"]),
                                         "max_abs_score_diff": float(found["diff"]),
                                         "programs_flagged": int(found["flagged"]), "programs": int(found["programs"])}
Path("screen.json").write_text(json.dumps({"source": "screen.log (README.md has the command)", "rows": rows},
                                          indent=1) + "\n")
row = rows[0]
labels = [w for w in row["times_ms"] if w.startswith("search")]
fig, ax = plt.subplots(figsize=(10, 4.2))
ax.barh(range(len(labels)), [row["times_ms"][w] for w in labels],
        color=["tab:green" if "anchor" in w else "tab:orange" if "screening" in w else "tab:blue" for w in labels])
ax.set_yticks(range(len(labels)), [w.replace("search, ", "") for w in labels])
ax.invert_yaxis()
ax.set_xlabel("ms (median of 3)")
ax.grid(axis="x", alpha=0.3)
ax.set_title(f"Router search, {row['setting']} {row['length'] // 1024}K, 32 / 2 heads, bf16, {row['card']}")
fig.tight_layout()
fig.savefig("screen.png", dpi=110)
