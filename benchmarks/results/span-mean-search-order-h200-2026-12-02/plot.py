"""Reads search-order-call2.log (search_order.py's JSON lines), writes summary.json (every timing, and the runs that
did not finish) and draws order.png: the search's time at 256K released against the size of its pieces, in the two
grid orders, for the anchor key, the span mean's hi-only loop and its exact search (one piece: the committed search,
drawn at the right as "all").

    python plot.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
lines = [json.loads(x) for x in open(HERE / "search-order-call2.log") if x.startswith("{")]
head, rows = lines[0], lines[1:]
done = {(r["package"], r["key"], r["piece"]) for r in rows}
missing = [dict(package="slk_flip", key=key, piece=piece, ms=None,
                why="not timed: the patched kernel stopped with an illegal memory access at its first span-mean run "
                    "in pieces (hi-only, pieces of 48); the process ended there")
           for key in ("span_mean hi-only", "span_mean") for piece in (None, 48, 96, 192, 384)
           if ("slk_flip", key, piece) not in done]
card = (HERE / "card-call2.txt").read_text().strip()
(HERE / "summary.json").write_text(json.dumps(dict(head, card=card, rows=rows + missing), indent=1))

pieces = [48, 96, 192, 384]
fig, ax = plt.subplots(figsize=(7, 4.5))
for key, color in (("anchor", "C0"), ("span_mean hi-only", "C1"), ("span_mean", "C2")):
    for package, style, order in (("slkernels", "o-", "row fastest"), ("slk_flip", "s--", "piece fastest")):
        got = {r["piece"]: r["ms"] for r in rows if r["package"] == package and r["key"] == key}
        xs = [p for p in pieces if p in got] + ([600] if None in got else [])
        ys = [got[p] for p in pieces if p in got] + ([got[None]] if None in got else [])
        if xs:
            ax.plot(xs, ys, style, color=color, label=f"{key}, {order}")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(pieces + [600], [str(p) for p in pieces] + ["all"])
ax.set_xlabel("anchors per piece")
ax.set_ylabel("ms (median of 5)")
ax.set_title(f"search at {head['length'] // 1024}K {head['setting']}, {card.split(',')[0]}")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(HERE / "order.png", dpi=110)
