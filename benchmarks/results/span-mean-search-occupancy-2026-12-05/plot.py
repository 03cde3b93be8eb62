"""Collect `occupancy.py`'s JSON lines (occupancy-call1.log of call1.sh) into occupancy.json and draw occupancy.png:
the search's time per tiling (anchors a block, warps, stages, register cap) for the exact span-mean search at 256K
released and balanced and the bare hi-only loop, each bar labelled with the build's registers and spills, and the
whole forwards beside it.

    python plot.py DIR   # DIR holds occupancy-call1.log and card-call1.txt; writes there
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(folder: Path) -> None:
    lines = (folder / "occupancy-call1.log").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    card_file = folder / "card-call1.txt"
    card = card_file.read_text().strip() if card_file.is_file() else rows[0].get("card", "card not recorded")
    (folder / "occupancy.json").write_text(json.dumps({"card": card, "command": "bash call1.sh", "rows": rows},
                                                      indent=1) + "\n")
    groups: dict[str, list] = {}
    for row in rows:
        if row.get("what") == "forward":
            groups.setdefault(f"whole forward, released {row['length'] // 1024}K", []).append(row)
        elif "setting" in row:
            what = "hi-only loop (not exact)" if row.get("hi_only") else "exact search"
            groups.setdefault(f"{what}, {row['setting']} {row['length'] // 1024}K", []).append(row)
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 1.6 + 0.26 * sum(map(len, groups.values()))), squeeze=False)
    for ax, (title, group) in zip(axes[:, 0], groups.items()):
        labels, values = [], []
        for r in group:
            if r.get("what") == "forward":
                v = r.get("variant")
                labels.append(r["key"] + ("" if v is None else f", BN {v['block_n']} / {v['warps']}w / {v['stages']}s"
                                          f" / cap {v['maxnreg']}"))
            else:
                labels.append(f"BN {r['block_n']} / {r['warps']}w / {r['stages']}s / cap {r['maxnreg']}: "
                              f"{r.get('registers')} regs, {r.get('spills')} B spilled"
                              + ("" if r.get("bit_equal", True) else " (NOT bit-equal)")
                              + (f" ({r['error'][:40]})" if "error" in r else ""))
            values.append(r.get("ms", 0.0))
        ax.barh(range(len(group)), values, color="tab:blue")
        ax.set_yticks(range(len(group)), labels, fontsize=7)
        ax.invert_yaxis()
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.1f}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ms (median of five calls)")
    fig.suptitle(f"span-mean search occupancy: {card}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(folder / "occupancy.png", dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
