"""Run metrics: one JSON object per line in metrics.jsonl, and a PNG of loss and span recall per step."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import SlconvertError
from ..outputs import write_text_atomically, written_atomically

__all__ = ["METRICS_FILE", "MetricsLog", "records_until", "plot_metrics"]

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL log: one JSON object per line, each appended whole by one write."""

    def __init__(self, path: Path, kept: list[dict] | None = None):
        """Start the log with `kept` (a resumed run's records, `records_until`), or empty; the file is replaced
        whole or not at all, so a full disk cannot cost the records of the run being resumed."""
        self.path = Path(path)
        write_text_atomically(self.path, "".join(json.dumps(record) + "\n" for record in kept or ()))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return read_records(self.path)


def records_until(path: Path, step: int) -> list[dict]:
    """The records of a resumed run up to its checkpoint's `step`: those after it are redone. Read (and refused in
    one line when damaged) before anything in the run folder is written."""
    return [record for record in read_records(path) if record.get("step", 0) <= step]


def read_records(path: Path) -> list[dict]:
    """Every record of a metrics log ([] without one). A last line without its end that is not a record, but
    ASCII as every line written is (`json.dumps`), is what a run killed mid-write leaves: it is dropped, as its
    step comes after every checkpoint. Anything else that is not a record is refused, naming its line."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as err:
        raise SlconvertError(f"cannot read {path} ({err.strerror}); move the file away to resume without the "
                             "earlier metrics") from None
    tail = lines.pop()  # b"" when the file ends with its last line
    records = [_record(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if tail.strip():
        try:
            records.append(_record(path, len(lines) + 1, tail))
        except SlconvertError:
            if not tail.isascii():
                raise
    return records


def _record(path: Path, number: int, line: bytes) -> dict:
    """One line of a metrics log as its record, or one line saying why it is none."""
    try:
        record = json.loads(line.decode())
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except json.JSONDecodeError as err:
        problem = f"is not JSON ({err.msg})"
    else:
        step = record.get("step", 0) if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            return record
        problem = "is not a JSON object with an integer step" if isinstance(record, dict) else "is not a JSON object"
    raise SlconvertError(f"{path} line {number} {problem}; delete that line, or move the file away to resume "
                         "without the earlier metrics")


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
