"""decode.json / decode.png: graph-replayed decode step of one layer (released setting, attention shape) by context,
anchor key against the span-mean key with its running sums rebuilt each step and kept between steps
(`run-1412f9b/bench.json`, one run on one H100). Usage: python plot.py"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
bench = json.loads((HERE / "run-1412f9b" / "bench.json").read_text())
rows = [r for r in bench["rows"] if r["pass"] == "decode"]
series = {
    "anchor key": {r["length"]: r["superlinear_graph_ms"] for r in rows if r["setting"] == "released"},
    "span mean, sums rebuilt every step": {r["length"]: r["superlinear_graph_ms"] for r in rows
                                           if r["setting"] == "released span_mean"},
    "span mean, sums kept (LayerState)": {r["length"]: r["superlinear_graph_kept_sums_ms"] for r in rows
                                          if r["setting"] == "released span_mean"},
    "dense SDPA": {r["length"]: r["dense_graph_ms"] for r in rows if r["setting"] == "released"},
}
card = bench["environment"].get("gpu", "NVIDIA H100 80GB HBM3")
(HERE / "decode.json").write_text(json.dumps({"card": card, "ms_per_step_graph": series}, indent=1) + "\n")
fig, ax = plt.subplots(figsize=(7, 4.2))
for name, points in series.items():
    lengths = sorted(points)
    ax.plot(lengths, [points[n] for n in lengths], marker="o", label=name)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("context (keys)")
ax.set_ylabel("ms per decode step (CUDA graph)")
ax.set_title(f"One layer, released setting, B=1, 32/2 heads, D=128, bf16\n{card}, commit 1412f9b")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "decode.png", dpi=120)
print((HERE / "decode.json").read_text())
