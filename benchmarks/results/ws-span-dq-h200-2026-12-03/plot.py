"""The warp-specialised span dq pass over the tl kernel's, per case, and the whole backward at 256K released.

    python plot.py  (in this folder: reads backward-call1.json and time-call1.json, writes passes.png and
    summary.json)
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    rows = json.load(open("backward-call1.json")) + json.load(open("time-call1.json"))
    summary = [dict(case=f"{r['setting']} {r['length'] // 1024}K", device=r["device"], tl_ms=r["tl_ms"],
                    ws={t: v for t, v in r["tiles"].items()}, **({"backward_ms": r["backward_ms"]}
                                                                  if "backward_ms" in r else {})) for r in rows]
    json.dump(summary, open("summary.json", "w"), indent=1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, e in enumerate(summary):
        (tiles, v), = e["ws"].items()
        ratio = v["ms"] / min(e["tl_ms"])
        ax.barh(i, ratio, color="tab:green" if ratio < 1 else "tab:red", hatch="" if v["exact"] else "xx")
        ax.text(ratio, i, f" {v['ms']:.1f} ms (tl {min(e['tl_ms']):.1f})", va="center", fontsize=7)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(summary)), [e["case"] for e in summary], fontsize=7)
    ax.set_xlim(0, 1.5)
    ax.invert_yaxis()
    ax.set_xlabel(f"span dq pass, warp-specialised {tiles} / tl (best of two)", fontsize=7)
    whole = summary[0]["backward_ms"]
    times = [min(whole["tl"]), min(whole["ws"])]
    bx.barh([0, 1], times, color=["grey", "tab:green"])
    for i, t in enumerate(times):
        bx.text(t, i, f" {t:.1f} ms", va="center", fontsize=7)
    bx.set_yticks([0, 1], ["tl span dq", "warp-specialised"], fontsize=7)
    bx.set_xlim(0, max(times) * 1.3)
    bx.invert_yaxis()
    bx.set_title(f"whole backward, {summary[0]['case']}", fontsize=8)
    bx.set_xlabel("ms", fontsize=7)
    fig.suptitle(f"Warp-specialised span dq against the tl entry kernel, {summary[0]['device']} (hatched: wrong)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig("passes.png", dpi=130)


if __name__ == "__main__":
    main()
