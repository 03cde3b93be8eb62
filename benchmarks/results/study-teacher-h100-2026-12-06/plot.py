"""teacher-training.png from teacher-metrics.jsonl: the retrained study teacher's loss (and its NIAH and text parts)
and tokens/s by step, both calls of teacher.sh (the first cut at step 1886, the second resumed to 2041).

    python benchmarks/results/study-teacher-h100-2026-12-06/plot.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
rows = [json.loads(line) for line in (HERE / "teacher-metrics.jsonl").read_text().splitlines() if line.strip()]
steps = [r["step"] for r in rows]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
for key, label in (("loss_smooth", "loss (smoothed)"), ("lm_niah", "needle samples"), ("lm_text", "text samples")):
    left.plot(steps, [r.get(key) for r in rows], label=label)
left.set(xlabel="step", ylabel="next-token loss", yscale="log", title="study teacher, recipes/study-teacher.yaml")
left.axvline(1886, color="grey", ls=":", label="first call cut")
left.legend()
right.plot(steps, [r["tokens_per_s"] / 1000 for r in rows])
right.set(xlabel="step", ylabel="thousand tokens/s", title="throughput per step (up at each longer curriculum stage)")
for axis in (left, right):
    axis.grid(alpha=0.3)
card = (HERE / "card.txt").read_text().split(",")[0]
fig.suptitle(f"{card}, 2041 steps, 128-8192 tokens")
fig.tight_layout()
fig.savefig(HERE / "teacher-training.png", dpi=120)
print(f"final step {steps[-1]}: loss {rows[-1]['loss']:.4f}")
