"""Collect a demo or pipeline run into OUT/summary.json and print the side-by-side NIAH table.

Reads what the stages left under OUT: eval/summary.json (NIAH grid of the converted model and, with
--compare, of the source), converted/config.json (the Superlinear settings) and the training summaries
of warmup/ and curriculum/ where they exist; eval-converted/summary.json, where it exists, is the NIAH grid of
the converted model before any training (`converted_untrained_accuracy`); eval-shipped/summary.json, where it
exists, is the grid of the shipped GPU-trained model of the same conversion (`shipped_accuracy`, the demo).
`source_accuracy`, `converted_accuracy` (this run's training) and the others are grid averages as fractions in
[0, 1] (the evaluation's tables are in percent); `search_power`, `span_power`, `search_key` and `window` are the
conversion's settings.

    python scripts/demo_summary.py [OUT]        (default OUT: demo-output)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRAININGS = ("warmup", "curriculum")


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def side_by_side(base: dict | None, table: dict, extra: dict | None = None) -> str:
    """Depth rows by length columns, 'source -> converted' in each cell (converted only without a source);
    `extra` maps a label to another table of the same grid, shown after the arrow as '| label value'."""
    lengths = table["lengths"]
    extra = extra or {}
    head = "depth % | " + " | ".join(f"{n} tokens" for n in lengths)
    lines = [head, "-" * len(head)]
    for row, depth in enumerate(table["depths"]):
        cells = []
        for col in range(len(lengths)):
            new = _cell(table["scores"][row][col])
            cell = new if base is None else f"{_cell(base['scores'][row][col])} -> {new}"
            cells.append(cell + "".join(f" | {_cell(t['scores'][row][col])}" for t in extra.values()))
        lines.append(f"{depth:>7g} | " + " | ".join(cells))
    average = _cell(table["average"]) if base is None else f"{_cell(base['average'])} -> {_cell(table['average'])}"
    average += "".join(f" | {_cell(t['average'])}" for t in extra.values())
    lines.append(f"average | {average}")
    return "\n".join(lines)


def main(out_dir: str) -> dict:
    out = Path(out_dir)
    evaluation = _read(out / "eval" / "summary.json")
    if evaluation is None or "niah" not in evaluation.get("results", {}):
        sys.exit(f"error: {out / 'eval' / 'summary.json'} has no NIAH results; run the evaluation stage first")
    niah = evaluation["results"]["niah"]
    table, base = niah["table"], niah.get("base_table")
    converted = _read(out / "converted" / "config.json") or {}
    block = converted.get("superlinear") or {}
    params = block.get("params", {})
    summary = {
        "source_accuracy": round(base["average"] / 100.0, 6) if base else None,
        "converted_accuracy": round(table["average"] / 100.0, 6),
        "search_power": params.get("search_power"),
        "span_power": params.get("span_power"),
        "search_key": params.get("search_key", "anchor") if params else None,
        "window": block.get("window"),
        "task": table.get("task"),
        "lengths": table["lengths"],
        "depths": table["depths"],
        "scored": table.get("scored"),
        "superlinear": converted.get("superlinear"),
        "models": evaluation.get("models"),
        "files": {
            "heatmaps": str(out / "eval" / ("niah_compare.png" if base else "niah_heatmap.png")),
            "evaluation": str(out / "eval" / "summary.md"),
        },
    }
    before = _read(out / "eval-converted" / "summary.json")  # optional: the converted model before training
    if before and "niah" in before.get("results", {}):
        summary["converted_untrained_accuracy"] = round(before["results"]["niah"]["table"]["average"] / 100.0, 6)
    shipped = _read(out / "eval-shipped" / "summary.json")  # optional: the shipped GPU-trained conversion
    shipped_table = None
    if shipped and "niah" in shipped.get("results", {}):
        shipped_table = shipped["results"]["niah"]["table"]
        summary["shipped_accuracy"] = round(shipped_table["average"] / 100.0, 6)
        models = shipped.get("models") or [{}]
        summary["shipped_model"] = models[0].get("path")
    for stage in TRAININGS:
        if (out / stage).is_dir():
            summary[f"{stage}_training"] = _read(out / stage / "training_summary.json")
            summary["files"][f"{stage}_curve"] = str(out / stage / "training.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    extra = {"shipped": shipped_table} if shipped_table else {}
    title = "source -> converted and trained here" if base else "converted and trained here"
    if extra:
        title += " | shipped model of the same conversion, trained on a GPU"
    print(f"NIAH exact match in %, {title}:")
    print(side_by_side(base, table, extra))
    source = "n/a" if base is None else f"{summary['source_accuracy']:.3f}"
    untrained = summary.get("converted_untrained_accuracy")
    untrained = "" if untrained is None else f" (before training {untrained:.3f})"
    shipped_text = "" if "shipped_accuracy" not in summary else f", shipped GPU-trained {summary['shipped_accuracy']:.3f}"
    print(f"Superlinear p = {summary['search_power']}, rho = {summary['span_power']}, W = {summary['window']}, "
          f"search key {summary['search_key']}")
    print(f"source accuracy {source}, converted accuracy {summary['converted_accuracy']:.3f}{untrained}"
          f"{shipped_text} -> {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
