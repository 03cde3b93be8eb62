"""dk/dv pass times of the warp-specialised kernel's tilings against the tl kernel, per case, and the whole backward
and forward + backward with each.

    python plot.py  (in this folder: reads time-call*.json and backward-call*.json, writes passes.png and
    summary.json)
"""

from __future__ import annotations

import glob
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    summary = []
    for path in sorted(glob.glob("time-call*.json")) + sorted(glob.glob("backward-call*.json")):
        call = path.split("-")[-1].split(".")[0]
        for row in json.load(open(path)):
            entry = dict(call=call, case=f"{row['setting']} {row['length'] // 1024}K", device=row["device"],
                         tl_ms=row["tl_ms"], ws=row["tiles"])
            for key in ("backward_ms", "fwd_bwd_ms", "dense_fwd_bwd_ms"):
                if key in row:
                    entry[key] = row[key]
            summary.append(entry)
    json.dump(summary, open("summary.json", "w"), indent=1)
    panels = [(e, p) for e in summary if "backward_ms" not in e for p in ("window", "spans")]
    whole = [e for e in summary if "backward_ms" in e]
    cols = 4
    rows = -(-(len(panels) + len(whole)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels) + len(whole):]:
        ax.axis("off")
    for ax, (e, p) in zip(axes.flat, panels):
        ref = min(e["tl_ms"][p])
        labels = ["tl"] + [t.replace(" ", "") + ("" if v[p]["exact"] else " WRONG") for t, v in e["ws"].items()]
        times = [ref] + [v[p]["ms"] for v in e["ws"].values()]
        for i, (t, v) in enumerate(zip(times, [None] + list(e["ws"].values()))):
            bad = v is not None and not v[p]["exact"]
            color = "grey" if v is None else ("tab:green" if t < ref else "tab:red")
            ax.barh(i, t / ref, color=color, hatch="xx" if bad else "", edgecolor="k" if bad else color)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(times)), labels, fontsize=6)
        ax.set_title(f"{e['case']}, {p} ({e['call']})\ntl {ref:.1f} ms", fontsize=8)
        ax.set_xlabel("dk/dv pass / tl (best of two)", fontsize=7)
        ax.invert_yaxis()
    for ax, e in zip(axes.flat[len(panels):], whole):
        names = ["backward, tl", "backward, ws", "fwd+bwd, tl", "fwd+bwd, ws"]
        times = [min(e["backward_ms"]["tl"]), min(e["backward_ms"]["ws"]), min(e["fwd_bwd_ms"]["tl"]),
                 min(e["fwd_bwd_ms"]["ws"])]
        ax.barh(range(4), times, color=["grey", "tab:green", "grey", "tab:green"])
        for i, t in enumerate(times):
            ax.text(t, i, f" {t:.0f} ms ({e['dense_fwd_bwd_ms'] / t:.2f}x)" if i >= 2 else f" {t:.0f} ms",
                    va="center", fontsize=6)
        ax.set_yticks(range(4), names, fontsize=6)
        ax.set_xlim(0, max(times) * 1.5)
        ax.set_title(f"{e['case']} ({e['call']}): whole pass\n(x: over dense SDPA fwd+bwd "
                     f"{e['dense_fwd_bwd_ms']:.0f} ms)", fontsize=8)
        ax.set_xlabel("ms", fontsize=7)
        ax.invert_yaxis()
    fig.suptitle(f"Warp-specialised dk/dv against the tl kernel, {summary[0]['device']}; tiles (BM, BN, STAGES, "
                 "REGS, LOADER_REGS); hatched: wrong output", fontsize=9)
    fig.tight_layout()
    fig.savefig("passes.png", dpi=130)


if __name__ == "__main__":
    main()
