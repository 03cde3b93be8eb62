"""Span and window pass times of the warp-specialised kernel's tilings against the tl kernel, per call and case.

    python plot.py  (in this folder: reads time-call*.json, writes passes.png and summary.json)
"""

from __future__ import annotations

import glob
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _exact(diff: dict) -> bool:
    """ws_forward.py's test (call 1's rows predate its flag): bf16 rounding of O(1) outputs."""
    return diff["span_o"] < 0.05 and diff["lse"] < 1e-3 and diff["out"] < 0.05


def main() -> None:
    summary = []
    for path in sorted(glob.glob("time-call*.json")):
        call = path.split("-")[-1].split(".")[0]
        for row in json.load(open(path)):
            case = f"{row['setting']} {row['length'] // 1024}K"
            entry = dict(call=call, case=case, device=row["device"], tl_span_ms=row["tl_span_ms"],
                         tl_window_ms=row["tl_window_ms"],
                         ws={t: dict(span_ms=v["span_ms"], window_ms=v["window_ms"], exact=_exact(v["diff"]))
                             for t, v in row["tiles"].items()})
            if "forward_ms" in row:
                entry.update(forward_ms=row["forward_ms"], dense_ms=row["dense_ms"])
            summary.append(entry)
    json.dump(summary, open("summary.json", "w"), indent=1)
    cols = 5
    rows = -(-len(summary) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(summary):]:
        ax.axis("off")
    for ax, e in zip(axes.flat, summary):
        labels = ["tl"] + [t.replace(" ", "") + ("" if v["exact"] else " WRONG") for t, v in e["ws"].items()]
        span = [min(e["tl_span_ms"])] + [v["span_ms"] for v in e["ws"].values()]
        ref = span[0]
        colors = ["grey"] + ["tab:green" if s < ref else "tab:red" for s in span[1:]]
        hatches = [""] + ["" if v["exact"] else "xx" for v in e["ws"].values()]
        for i, (s, c, h) in enumerate(zip(span, colors, hatches)):
            ax.barh(i, s / ref, color=c, hatch=h, edgecolor="k" if h else c)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(span)), labels, fontsize=6)
        ax.set_title(f"{e['case']} ({e['call']})\ntl span pass {ref:.1f} ms", fontsize=8)
        ax.set_xlabel("span pass / tl (best of two)", fontsize=7)
        ax.invert_yaxis()
    fig.suptitle(f"Warp-specialised span pass against the tl kernel, {summary[0]['device']}; tiles (BM, BN, STAGES, "
                 "AHEAD, REGS[, Q_SMEM, PINGPONG]) in calls 1-2, (BM, BN, STAGES, REGS, PERSISTENT) in call 3; "
                 "hatched: wrong output", fontsize=9)
    fig.tight_layout()
    fig.savefig("passes.png", dpi=130)


if __name__ == "__main__":
    main()
