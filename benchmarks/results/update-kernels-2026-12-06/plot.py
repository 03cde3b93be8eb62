"""update_ab.png: one kept-sums update (graph-replayed) before and after its torch operations moved into kernels, and
the bench's decode step with kept against rebuilt sums (run1/, one H100). Usage: python3 plot.py (from this folder)."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(__file__).parent
ab = json.loads((here / "run1" / "update_ab.json").read_text())
bench = json.loads((here / "run1" / "bench" / "bench.json").read_text())
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
for name in ab["rows"][0]["median"]:
    left.plot([r["length"] for r in ab["rows"]], [r["median"][name] for r in ab["rows"]], "o-", label=name)
left.set(xscale="log", yscale="log", xlabel="keys in the cache", ylabel="ms per update (median of 5 rounds)",
         title="kept-sums update, B=1, 2 KV heads, D=128, bf16")
rows = [r for r in bench["rows"] if r.get("pass") == "decode" and r.get("superlinear_graph_kept_sums_ms")]
for key, label in (("superlinear_graph_kept_sums_ms", "span mean, sums kept"),
                   ("superlinear_graph_ms", "span mean, sums rebuilt"), ("dense_graph_ms", "dense SDPA")):
    right.plot([r["length"] for r in rows], [r[key] for r in rows], "o-", label=label)
right.set(xscale="log", yscale="log", xlabel="keys in the cache", ylabel="ms per decode step (graph replay)",
          title="one layer's decode step, released, 32/2 heads")
for ax in (left, right):
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
fig.suptitle(f"{ab['device']}, 2026-12-06")
fig.tight_layout()
fig.savefig(here / "update_ab.png", dpi=110)
