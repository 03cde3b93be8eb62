"""Collect `shared_ends.py`'s JSON lines (the logs of call1.sh) into shared_ends.json and draw shared_ends.png: the
search's time per key and launch order at each length and setting, and the whole forwards beside it.

    python plot.py DIR   # DIR holds search-call1.log, forward-call1.log and card-call1.txt; writes there
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows_of(folder: Path) -> list[dict]:
    rows = []
    for name in ("search-call1.log", "forward-call1.log"):
        path = folder / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


def main(folder: Path) -> None:
    rows = rows_of(folder)
    card_file = folder / "card-call1.txt"
    card = "; ".join(card_file.read_text().split("\n")).strip("; ") if card_file.is_file() else None
    (folder / "shared_ends.json").write_text(json.dumps({"card": card, "rows": rows}, indent=1) + "\n")
    groups = {}
    for row in rows:
        if row.get("what") in ("search", "forward", "inference forward"):
            title = f"{row['what']}, {row['setting']} {row['length'] // 1024}K"
            groups.setdefault(title, []).append(row)
    if not groups:
        raise SystemExit(f"no timings in {folder}")
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.2 + 0.28 * max(map(len, groups.values())) * len(groups)),
                             squeeze=False)
    for ax, (title, group) in zip(axes[:, 0], groups.items()):
        labels = [f"{r['key']}, {r['order'].replace('segment None', 'whole chains')}" + ("" if r.get("bit_equal") in (True, None) else " (NOT bit-equal)")
                  for r in group]
        ax.barh(range(len(group)), [r["ms"] for r in group], color="tab:blue")
        ax.set_yticks(range(len(group)), labels, fontsize=7)
        ax.invert_yaxis()
        for i, r in enumerate(group):
            ax.text(r["ms"], i, f" {r['ms']:.1f}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ms (median of five calls)")
    fig.suptitle(f"span-mean search in shared-end order: {card or 'card not recorded'}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(folder / "shared_ends.png", dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
