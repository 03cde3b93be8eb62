"""One line per training run from its metrics.jsonl: sequence length, steps, mean tokens/s (first step, which
compiles, left out), peak GPU memory, span recall before -> after, and the loss of every step.

    python scripts/training_report.py RUN_DIR LABEL [RUN_DIR LABEL ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def report(run: Path, label: str) -> str:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "event" not in r]
    timed = steps[1:] or steps
    tps = sum(r["tokens_per_s"] for r in timed) / len(timed)
    peak = max(r.get("peak_memory_gib", 0.0) for r in steps)
    recall = [r for r in rows if r.get("event") == "span_recall"]
    line = (f"{label}: seq_len {steps[-1]['seq_len']}, {len(steps)} steps, {tps:,.0f} tokens/s, "
            f"peak memory {peak:.1f} GiB")
    if recall:
        line += f", span recall {recall[0]['mean']:.3f} -> {recall[-1]['mean']:.3f}"
    return line + "\n  loss per step: " + ", ".join(f"{r['loss']:.4f}" for r in steps)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit("usage: python scripts/training_report.py RUN_DIR LABEL [RUN_DIR LABEL ...]")
    for run, label in zip(args[::2], args[1::2]):
        print(report(Path(run), label))
