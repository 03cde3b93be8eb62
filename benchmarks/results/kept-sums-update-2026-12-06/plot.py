"""update.json and update.png: the kernel time of one kept-sums update at 1M keys (B=1, 2 KV heads, D=128) by
kernel, from the torch profiler tables of the shipped update before this change (`../kept-sums-decode-2026-12-06/
run-1412f9b/profile.log`) and of this change's first GPU run (`run-torch-offsets/profile.log`; block totals of 128
columns a program). Each table lists its 30 (before) or 18 (after) most costly kernels over 10 updates; their sum
is what is plotted. Usage: python plot.py"""
import json
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).parent
RUNS = {"before (1412f9b)": HERE.parent / "kept-sums-decode-2026-12-06" / "run-1412f9b" / "profile.log",
        "this change, 128-column totals": HERE / "run-torch-offsets" / "profile.log"}
GROUPS = (("block totals", "_block_sums_kernel"), ("scan of changed blocks", "_scan_kernel"),
          ("compare (Triton)", "_compare_kernel"), ("bounds (Triton)", "_bound_kernel"),
          ("float64 scans (torch)", "scan_innermost_dim<double"))


def per_update_us(path):
    """{group: microseconds per update} from a profiler table (10 updates), every other kernel as "torch, other"."""
    got = {name: 0.0 for name, _ in GROUPS} | {"torch, other": 0.0}
    for line in path.read_text().splitlines():
        match = re.search(r"\s([\d.]+)(ms|us)\s+[\d.]+%\s+[\d.]+(?:ms|us)\s+[\d.]+(?:ms|us)\s+(\d+)\s*$", line)
        if not match:
            continue
        total = float(match.group(1)) * (1000.0 if match.group(2) == "ms" else 1.0) / 10
        group = next((name for name, key in GROUPS if key in line), "torch, other")
        got[group] += total
    return {name: round(value, 1) for name, value in got.items()}


data = {name: per_update_us(path) for name, path in RUNS.items()}
json.dump({"card": "NVIDIA H100 80GB HBM3", "length": 1 << 20, "unit": "us per update", "runs": data},
          open(HERE / "update.json", "w"), indent=1)
fig, ax = plt.subplots(figsize=(8, 3.2))
left = {name: 0.0 for name in data}
for group in [name for name, _ in GROUPS] + ["torch, other"]:
    widths = [data[run][group] for run in data]
    ax.barh(list(data), widths, left=[left[run] for run in data], label=group)
    for run, width in zip(data, widths):
        left[run] += width
for run in data:
    ax.text(left[run] + 10, run, f"{left[run]:.0f} us", va="center")
ax.set_xlabel("kernel time per update (us), 1M keys, one H100")
ax.set_title("Kept span-mean sums: one decode step's update")
ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
fig.savefig(HERE / "update.png", dpi=130, bbox_inches="tight")
print(json.dumps(data))
