"""tile-scan.png from `run1/`: the graph-replayed kept-sums update at 1M keys before and after the tile scan (five
rounds each, alternating, one process: `update_ab.json`), and the graph-replayed decode step of one layer (released,
span-mean key) with the sums kept and rebuilt, beside dense SDPA (`bench/bench.json`). One H100. Usage: python plot.py"""
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).parent / "run1"
ab = json.loads((HERE / "update_ab.json").read_text())
rows = [r for r in json.loads((HERE / "bench" / "bench.json").read_text())["rows"] if r["pass"] == "decode"]

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, (name, rounds) in enumerate(ab["rounds"].items()):
    left.scatter([i] * len(rounds), rounds, label=f"{name}: median {ab['median'][name]:.3f} ms")
left.set_xticks(range(len(ab["rounds"])), list(ab["rounds"]))
left.set_xlim(-0.5, len(ab["rounds"]) - 0.5)
left.set_ylim(0, None)
left.set_ylabel("ms per update (graph replay)")
left.set_title(f"Kept-sums update at {ab['length'] // 2**20}M keys, {ab['device']}", fontsize=9)
left.legend(fontsize=8, loc="lower center")
x = [r["length"] for r in rows]
right.plot(x, [r["superlinear_graph_kept_sums_ms"] for r in rows], "o-", label="span mean, kept sums (tile scan)")
right.plot(x, [r["superlinear_graph_ms"] for r in rows], "o:", label="span mean, rebuilt every step")
right.plot(x, [r["dense_graph_ms"] for r in rows], "k--", label="dense SDPA")
right.set_xscale("log", base=2)
right.set_yscale("log")
right.set_xlabel("context (keys)")
right.set_ylabel("ms per decode step, one layer")
right.set_title("Decode step, released setting, graph replay", fontsize=9)
right.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE.parent / "tile-scan.png", dpi=120)
