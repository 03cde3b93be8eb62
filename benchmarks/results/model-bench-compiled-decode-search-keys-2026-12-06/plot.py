"""compare.json and compare.png from the two model_bench.json files of call.sh (two calls, one machine, one GPU):
compiled decode ms per token (median step, CUDA graphs on a static cache) by search key and context.

    python benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/plot.py [FOLDER]

FOLDER (default: this one) holds anchor/ and span_mean/; a `commands.txt` there names the commands that made them.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
KEYS = ("anchor", "span_mean")
LAYERS = 6  # converted attention layers of the Nano shape

runs = {key: json.loads((HERE / key / "model_bench.json").read_text()) for key in KEYS}
rows = []
for key in KEYS:
    for r in runs[key]["rows"]:
        rows.append({"search_key": key, "length": r["length"],
                     "compiled_decode_ms_per_token": round(r["decode_compiled"]["ms_per_token"], 2),
                     "compiled_decode_tokens_per_s": round(r["decode_compiled"]["tokens_per_s"], 1),
                     "eager_decode_ms_per_token": round(r["decode"]["ms_per_token"], 1),
                     "prefill_tokens_per_s": round(r["prefill"]["tokens_per_s"], 1),
                     "decode_peak_gib": round(r["decode_compiled"]["peak_gib"], 2)})
at_1m = {r["search_key"]: r["compiled_decode_ms_per_token"] for r in rows if r["length"] == 1 << 20}
extra = at_1m["span_mean"] - at_1m["anchor"]
result = {"gpu": runs["anchor"]["environment"]["gpu"], "model": runs["anchor"]["model"]["name"],
          "commands": (HERE / "commands.txt").read_text().splitlines() if (HERE / "commands.txt").is_file() else
          ["bash benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/call.sh OUT span_mean",
           "LIMIT=280 bash benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/call.sh OUT anchor 1M"],
          "rows": rows,
          "at_1m": {"span_mean_over_anchor": round(at_1m["span_mean"] / at_1m["anchor"], 2),
                    "extra_ms_per_token": round(extra, 2), "extra_ms_per_layer_and_step": round(extra / LAYERS, 2)}}
(HERE / "compare.json").write_text(json.dumps(result, indent=1) + "\n")

fig, axis = plt.subplots(figsize=(6, 4))
labels = [f"{r['search_key']}\n{r['length'] // 1024}K" if r["length"] < 1 << 20 else
          f"{r['search_key']}\n{r['length'] >> 20}M" for r in rows]
bars = axis.bar(labels, [r["compiled_decode_ms_per_token"] for r in rows],
                color=["tab:blue" if r["search_key"] == "anchor" else "tab:orange" for r in rows])
axis.bar_label(bars, fmt="%.2f")
axis.set(ylabel="compiled decode, ms per token (median of 16)", ylim=(0, None))
axis.grid(axis="y", alpha=0.3)
fig.suptitle(f"{result['model']}, released setting, {result['gpu']}", fontsize=10)
fig.tight_layout()
fig.savefig(HERE / "compare.png", dpi=120)
print(json.dumps(result, indent=1))
