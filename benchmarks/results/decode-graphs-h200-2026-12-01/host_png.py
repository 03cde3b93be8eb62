"""host.json (benchmarks/decode_host_time.py --cuda --replayed) as host.png: one decode step per length, eager with
its three kernel launches, eager replayed from a CUDA graph (decode_graphs.GRAPH_DECODE), and the graph replay alone.
Run in the results folder; `python host_png.py OTHER.json` draws OTHER.json into host.png instead."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

data = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "host.json").read_text())
rows = data["rows"]
bars = [("eager, kernels launched", "eager_synced_us", "eager_back_to_back_us"),
        ("eager, replayed from a graph", "replayed_eager_synced_us", "replayed_eager_back_to_back_us")]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
for ax, (label, index) in zip(axes, (("synchronised after each call", 1), ("back to back", 2))):
    x = range(len(rows))
    for i, bar in enumerate(bars):
        ax.bar([j + (i - 1) * 0.27 for j in x], [r[bar[index]] for r in rows], 0.27, label=bar[0])
    ax.bar([j + 0.27 for j in x], [r["graph_replay_us"] for r in rows], 0.27, label="graph replay alone")
    ax.set_xticks(list(x), [f"{r['length'] // 1024}K keys" for r in rows])
    ax.set_title(f"one released decode step, {label}")
    ax.grid(axis="y", alpha=0.3)
axes[0].set_ylabel("us per step")
axes[1].legend(fontsize=8)
fig.suptitle(f"{data['environment']['gpu']}, torch {data['environment']['torch']}, Triton {data['environment']['triton']}")
fig.tight_layout()
fig.savefig("host.png", dpi=110)
