"""decode.json and decode.png: the graph-replayed decode step of one layer with the span-mean key (released setting,
B=1, 32 query / 2 KV heads, D=128, bf16) against the context, from the three `slconvert bench --pass decode` runs of
this folder on one H100 (one machine, calls back to back): the running sums rebuilt every step, kept with 32-column
block totals (4 warps, `run1-shipped/`), kept with 128-column totals (2 warps, `run2-long-tests-128x2/` and
`run4-128x2/`, the latter adding 32K); dense SDPA's step beside them. Usage: python plot.py"""
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).parent
RUNS = {"32-column totals": HERE / "run1-shipped" / "bench" / "bench.json",
        "128-column totals": HERE / "run2-long-tests-128x2" / "bench128x2" / "bench.json",
        "128-column totals (second run)": HERE / "run4-128x2" / "bench" / "bench.json"}

rows = []
for run, path in RUNS.items():
    for row in json.loads(path.read_text())["rows"]:
        if row["pass"] == "decode" and row["setting"] == "released span_mean":
            rows.append(dict(run=run, length=row["length"], rebuilt_ms=round(row["superlinear_graph_ms"], 4),
                             kept_ms=round(row["superlinear_graph_kept_sums_ms"], 4),
                             dense_ms=round(row["dense_graph_ms"], 4)))
json.dump({"card": "NVIDIA H100 80GB HBM3", "unit": "ms per graph-replayed step of one layer", "rows": rows},
          open(HERE / "decode.json", "w"), indent=1)

fig, ax = plt.subplots(figsize=(7, 4))
for run, marker in zip(RUNS, "os^"):
    mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["length"])
    x = [r["length"] for r in mine]
    line = "none" if "second" in run else "-"  # that run has no 256K point: markers only
    ax.plot(x, [r["kept_ms"] for r in mine], marker=marker, ls=line, label=f"kept sums, {run}")
    ax.plot(x, [r["rebuilt_ms"] for r in mine], marker=marker, ls=":", color="grey",
            label="rebuilt every step" if run == next(iter(RUNS)) else None)
dense = sorted({(r["length"], r["dense_ms"]) for r in rows if r["run"] == next(iter(RUNS))})
ax.plot([d[0] for d in dense], [d[1] for d in dense], "k--", label="dense SDPA")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("context (keys)")
ax.set_ylabel("ms per decode step, one layer")
ax.set_title("Span-mean decode, graph replay, one H100")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "decode.png", dpi=120)
