"""summary.json and steps.png from the call logs: the graph-replayed decode step per setting and length, this tree
(pieces of decode.SEARCH_SPLIT) against commit 72fc727 (pieces of 128 anchors) and dense SDPA, call 4; the window
branch's calls 2 and 3 in summary.json only."""
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).parent


def records(name):
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.startswith("{")]


summary = {}
for call in ("branch-compare-call2.log", "branch-compare-call3.log", "pieces-compare-call4.log"):
    table = defaultdict(lambda: defaultdict(list))
    for r in records(call):
        if "ms" not in r:
            continue
        label = r["step"] + (f", branch {r['branch']}" if "branch" in r else "") + (
            f", {r['variant']}" if "variant" in r else "")
        table[f"{r['setting']} {r['length']}"][label].append(round(r["ms"] * 1000, 1))
    summary[call] = {"unit": "us, CUDA-graph replay, median of 100", "rows": table}
(HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

rows = summary["pieces-compare-call4.log"]["rows"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, setting in zip(axes, ("released", "balanced")):
    lengths = [16384, 65536, 1 << 20]
    for i, (label, color) in enumerate((("72fc727", "tab:gray"), ("this tree", "tab:blue"), ("dense SDPA", "tab:orange"))):
        values = [min(rows[f"{setting} {n}"][label]) for n in lengths]
        bars = ax.bar([x + (i - 1) * 0.27 for x in range(3)], values, 0.27, label=label, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(3), ["16K", "64K", "1M"])
    ax.set_ylabel("us per step (best of two runs)")
    ax.set_title(f"decode of one token, {setting}, one H200 (call 4)", fontsize=9)
    ax.legend(fontsize=8)
fig.tight_layout()
out = HERE / "steps.png"
fig.savefig(out, dpi=110)
Image.open(out).convert("RGB").quantize(256).save(out)
