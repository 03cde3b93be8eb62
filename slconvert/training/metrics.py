"""Run metrics: one JSON object per line in metrics.jsonl, and a PNG of loss and span recall per step."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..outputs import written_atomically

__all__ = ["MetricsLog", "plot_metrics"]


class MetricsLog:
    """Append-only JSONL log; on resume, lines past the resumed step are dropped (they will be redone)."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [line for line in self.read() if line.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_metrics(records: list[dict], out: Path) -> Path | None:
    """Loss (total and parts) against step, and per-layer span recall when measured; None if nothing to plot."""
    steps = [r for r in records if "loss" in r and r.get("event") is None]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recalls = [r for r in records if r.get("event") == "span_recall"]
    panels = 2 if recalls or any("recall" in r for r in steps) else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    x = [r["step"] for r in steps]
    smooth = [r.get("loss_smooth") for r in steps]
    if any(y is not None for y in smooth):  # the average over every step, and the logged steps as points
        ax.plot(x, [r["loss"] for r in steps], ".", color="C0", alpha=0.35, label="loss (logged steps)")
        ax.plot(x, [math.nan if y is None else y for y in smooth], "-", color="C0", label="loss (average of every step)")
    for key, style in (("loss", "-"), ("lm", "--"), ("lm_niah", ":"), ("lm_text", "-."), ("kl", "--"), ("mse", ":"),
                       ("distill", "-")):
        ys = [r.get(key) for r in steps]
        if key == "loss" and any(y is not None for y in smooth):
            continue
        if key != "loss" and all(y is None for y in ys):
            continue
        if key != "loss" and ys == [r.get("loss") for r in steps]:
            continue
        ax.plot(x, [math.nan if y is None else y for y in ys], style, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if panels == 2:
        ax = axes[0][1]
        layers = sorted({layer for r in recalls for layer in r["layers"]} |
                        {k.rsplit("_", 1)[1] for r in steps for k in r if k.startswith("recall_layer_")}, key=int)
        colors = {layer: f"C{i % 10}" for i, layer in enumerate(layers)}
        for layer in layers:
            train = [(r["step"], r[f"recall_layer_{layer}"]) for r in steps if f"recall_layer_{layer}" in r]
            if train:
                ax.plot(*zip(*train), ".", color=colors[layer], alpha=0.35, label=f"layer {layer} (training rows)")
            pts = [(r["step"], r["layers"][layer]) for r in recalls if layer in r["layers"]]
            if pts:
                ax.plot(*zip(*pts), "o-", color=colors[layer], label=f"layer {layer} (held-out batch)")
        ax.set_xlabel("step")
        ax.set_ylabel("span recall")
        ax.set_ylim(0, 1.02)
        ax.set_title("dense attention mass inside spans + window")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with written_atomically(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out
