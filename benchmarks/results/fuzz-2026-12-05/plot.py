"""fuzz.png: every case's worst row of each compared tensor, as a fraction of its bound (1 = the bound), from the
fuzz.json files of this folder's calls.

    python benchmarks/results/fuzz-2026-12-05/plot.py
"""

import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TENSORS = ["out", "replay", "dq", "dk", "dv", "dq_search"]


def main() -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    total, over = 0, 0
    for path in sorted(glob.glob(os.path.join(HERE, "call*", "fuzz.json"))):
        data = json.load(open(path))
        # the two calls' files predate "grad_bound" in the JSON: fuzz_triton.GRAD_BOUND's values then
        grad = data.get("grad_bound", {"torch.bfloat16": 0.15, "torch.float16": 3e-2, "torch.float32": 3e-3})
        row = data["row_bound"]
        for case in data["cases"]:
            total += 1
            for x, name in enumerate(TENSORS):
                res = case["results"].get(name)
                if not isinstance(res, dict):
                    continue
                key = f"torch.{case['dtype']}"
                bound = (row if name in ("out", "replay") else grad)[key]
                over += res["worst"] > bound
                ax.scatter(x + (hash(case["seed"]) % 100 - 50) / 250, max(res["worst"] / bound, 1e-4), s=10,
                           c={"bfloat16": "C0", "float16": "C1", "float32": "C2"}[case["dtype"]], alpha=0.6)
    for dtype, colour in (("bfloat16", "C0"), ("float16", "C1"), ("float32", "C2")):
        ax.scatter([], [], c=colour, label=dtype)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(TENSORS)), TENSORS)
    ax.set_ylabel("worst row error / bound (floor 1e-4)")
    ax.set_title(f"Triton backend against the reference, row by row: {total} random cases, {over} tensors over the bound")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "fuzz.png"), dpi=120)


if __name__ == "__main__":
    main()
