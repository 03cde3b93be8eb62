"""compare.json / compare.png: compiled decode of the Nemotron-3-Nano shape at 1M, span-mean key with the running
sums kept (this folder's second call) beside the two earlier runs of the same model and setting on another H100
machine (sums rebuilt each step; the anchor key), from ../model-bench-compiled-decode-search-keys-2026-12-06/.
Separate runs, so the bars are labelled by run. Usage: python plot.py"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
EARLIER = HERE.parent / "model-bench-compiled-decode-search-keys-2026-12-06"


def compiled(path: Path) -> dict:
    rows = [r for r in json.loads(path.read_text())["rows"] if r["length"] == 1 << 20]
    step = rows[0]["decode_compiled"]
    return {"ms_per_token": step["ms_per_token"], "peak_gib": step["peak_gib"], "source": str(path.relative_to(HERE.parent))}


bars = {
    "span mean, sums kept\n(this run)": compiled(HERE / "second-call" / "span_mean" / "model_bench.json"),
    "span mean, sums rebuilt\n(earlier run)": compiled(EARLIER / "span_mean" / "model_bench.json"),
    "anchor key\n(earlier run)": compiled(EARLIER / "anchor" / "model_bench.json"),
}
(HERE / "compare.json").write_text(json.dumps({"card": "NVIDIA H100 80GB HBM3", "context": 1 << 20,
                                               "compiled_decode": {k.replace("\n", " "): v for k, v in bars.items()}},
                                              indent=1) + "\n")
fig, ax = plt.subplots(figsize=(6.5, 4))
names = list(bars)
values = [bars[n]["ms_per_token"] for n in names]
ax.bar(names, values, color=["tab:green", "tab:orange", "tab:blue"])
for i, v in enumerate(values):
    ax.text(i, v + 0.3, f"{v:.2f}", ha="center")
ax.set_ylabel("compiled decode, ms per token (median)")
ax.set_title("Nemotron-3-Nano shape (64 experts), released setting, 1M context\n"
             "NVIDIA H100 80GB HBM3; three runs, two machines", fontsize=10)
fig.tight_layout()
fig.savefig(HERE / "compare.png", dpi=120)
print((HERE / "compare.json").read_text())
