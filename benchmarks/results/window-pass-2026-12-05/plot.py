"""window_pass.json and window_pass.png from call 1's log: the window pass under each tiling (this tree's kernel),
and the head copy's default, per setting and length; the whole forwards beside them in the JSON.

    python plot.py          (reads window-call1.log and card-call1.txt here, writes next to them)
"""
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = pathlib.Path(__file__).parent
lines = [json.loads(x) for x in (here / "window-call1.log").read_text().splitlines() if x.startswith("{")]
env = next(x for x in lines if "card" in x)
rows = [x for x in lines if "card" not in x]
(here / "window_pass.json").write_text(json.dumps({"command": "bash call1.sh (window_pass.py)", "environment": env,
                                                   "card_line": (here / "card-call1.txt").read_text().strip(),
                                                   "rows": rows}, indent=1))


def label(row):
    tiles = row["tiles"]
    name = "default" if tiles is None else tiles if isinstance(tiles, str) else ",".join(map(str, tiles))
    return f"{row['kernels']} {name}"


jobs = sorted({(r["setting"], r["length"]) for r in rows}, key=lambda j: (j[0], -j[1]))
fig, axes = plt.subplots(1, len(jobs), figsize=(4.2 * len(jobs), 5.5), sharey=False)
for ax, (setting, length) in zip(axes, jobs):
    window = [r for r in rows if (r["setting"], r["length"]) == (setting, length) and r["pass_"] == "window"
              and not r.get("with_ow") and "median_ms" in r]
    names = [label(r) for r in window]
    ms = [r["median_ms"] for r in window]
    colors = ["tab:gray" if r["kernels"] == "head" else "tab:blue" if r["tiles"] is None else "tab:orange"
              for r in window]
    ax.barh(range(len(ms)), ms, color=colors)
    ax.set_yticks(range(len(ms)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("window pass, ms (median)")
    ax.set_title(f"{setting} {length // 1024}K", fontsize=9)
fig.suptitle(f"Window pass (output only) by tiling: gray the kernel before, blue this default, orange other tilings\n"
             f"{env['card']}, torch {env['torch']}, Triton {env['triton']}; 32/2 heads, D 128, bf16", fontsize=9)
fig.tight_layout()
fig.savefig(here / "window_pass.png", dpi=110)
