"""summary.json and orders.png from the call logs: the graph-replayed decode step under each program order of the
partial kernel (decode.CHUNK_ORDER), without and with programmatic dependent launch (call 2), and call 1's
comparison with commit 8104ba6."""
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).parent


def records(name):
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.startswith("{")]


call1, call2 = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
for r in records("order-compare.log"):
    if r.get("ms") is not None:
        call1[f"{r['setting']} {r['length']}"][r["step"]].append(round(r["ms"] * 1000, 1))
for r in records("order-sweep.log"):
    label = r["step"] if "step" in r else f"order {r['order']}" + (", PDL" if r["pdl"] else "")
    call2[f"{r['setting']} {r['length']}"][label].append(round(r["ms"] * 1000, 1))
unit = "us, CUDA-graph replay, median of 100"
(HERE / "summary.json").write_text(json.dumps({"unit": unit, "call 1 (order-compare.log)": call1,
                                               "call 2 (order-sweep.log)": call2}, indent=1) + "\n")

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
labels = [f"order {o}" for o in range(4)] + [f"order {o}, PDL" for o in range(4)]
colors = ["#999999", "#6baed6", "#3182bd", "#08519c", "#fdae6b", "#fd8d3c", "#e6550d", "#a63603"]
for ax, setting in zip(axes, ("released", "balanced")):
    lengths = (16384, 65536, 1 << 20)
    for i, (label, color) in enumerate(zip(labels, colors)):
        values = [min(call2[f"{setting} {n}"][label]) / min(call2[f"{setting} {n}"]["order 0"]) for n in lengths]
        ax.bar([x + (i - 3.5) * 0.1 for x in range(3)], values, 0.1, label=label, color=color)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylim(0.85, 1.25)
    ax.set_xticks(range(3), ["16K", "64K", "1M"])
    ax.set_ylabel("step time / order 0's (best of two runs)")
    ax.set_title(f"decode of one token, {setting}, one H200 (call 2)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
out = HERE / "orders.png"
fig.savefig(out, dpi=110)
Image.open(out).convert("RGB").quantize(256).save(out)
