"""compare.json and compare.png from the two model_bench.json files of call1.sh (one run, one GPU):
prefill tokens/s and eager decode ms per token by length, anchor against span-mean search key.

    python benchmarks/results/model-bench-search-keys-2026-12-06/plot.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
KEYS = ("anchor", "span_mean")

runs = {key: json.loads((HERE / key / "model_bench.json").read_text()) for key in KEYS}
rows = []
for length in [row["length"] for row in runs["anchor"]["rows"]]:
    row = {"length": length}
    for key in KEYS:
        (match,) = [r for r in runs[key]["rows"] if r["length"] == length]
        row[f"{key}_prefill_tokens_per_s"] = round(match["prefill"]["tokens_per_s"], 1)
        row[f"{key}_prefill_peak_gib"] = round(match["prefill"]["peak_gib"], 2)
        row[f"{key}_eager_decode_ms_per_token"] = round(match["decode"]["ms_per_token"], 2)
    row["span_mean_over_anchor_prefill"] = round(row["span_mean_prefill_tokens_per_s"]
                                                 / row["anchor_prefill_tokens_per_s"], 3)
    rows.append(row)
result = {"gpu": runs["anchor"]["environment"]["gpu"], "model": runs["anchor"]["model"]["name"],
          "command": "bash benchmarks/results/model-bench-search-keys-2026-12-06/call1.sh OUT", "rows": rows}
(HERE / "compare.json").write_text(json.dumps(result, indent=1) + "\n")

labels = [f"{r['length'] // 1024}K" if r["length"] < 1 << 20 else f"{r['length'] >> 20}M" for r in rows]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
for key, marker in zip(KEYS, "os"):
    left.plot(labels, [r[f"{key}_prefill_tokens_per_s"] for r in rows], marker=marker, label=key)
    right.plot(labels, [r[f"{key}_eager_decode_ms_per_token"] for r in rows], marker=marker, label=key)
left.set(title="prefill (32K chunks)", xlabel="context", ylabel="tokens/s", ylim=(0, None))
right.set(title="eager decode (4 tokens, host-bound)", xlabel="context", ylabel="ms per token", ylim=(0, None))
for axis in (left, right):
    axis.grid(alpha=0.3)
    axis.legend(title="search key")
fig.suptitle(f"{result['model']}, released setting, {result['gpu']}")
fig.tight_layout()
fig.savefig(HERE / "compare.png", dpi=120)
print(json.dumps(rows, indent=1))
