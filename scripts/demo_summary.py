"""Collect a demo or pipeline run into OUT/summary.json and print the side-by-side NIAH table.

Reads what the stages left under OUT: eval/summary.json (NIAH grid of the converted model and, with
--compare, of the source), converted/config.json (the Superlinear settings) and the training summaries
of warmup/ and curriculum/ where they exist; eval-converted/summary.json, where it exists, is the NIAH grid of
the converted model before any training (`converted_untrained_accuracy`). `source_accuracy` and `converted_accuracy` are the grid
averages as fractions in [0, 1] (the evaluation's tables are in percent).

    python scripts/demo_summary.py [OUT]        (default OUT: demo-output)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRAININGS = ("warmup", "curriculum")


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def side_by_side(base: dict | None, table: dict) -> str:
    """Depth rows by length columns, 'source -> converted' in each cell (converted only without a source)."""
    lengths = table["lengths"]
    head = "depth % | " + " | ".join(f"{n} tokens" for n in lengths)
    lines = [head, "-" * len(head)]
    for row, depth in enumerate(table["depths"]):
        cells = []
        for col in range(len(lengths)):
            new = table["scores"][row][col]
            cells.append(f"{new:.1f}" if base is None else f"{base['scores'][row][col]:.1f} -> {new:.1f}")
        lines.append(f"{depth:>7g} | " + " | ".join(cells))
    average = f"{table['average']:.1f}" if base is None else f"{base['average']:.1f} -> {table['average']:.1f}"
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
    summary = {
        "source_accuracy": round(base["average"] / 100.0, 6) if base else None,
        "converted_accuracy": round(table["average"] / 100.0, 6),
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
    for stage in TRAININGS:
        if (out / stage).is_dir():
            summary[f"{stage}_training"] = _read(out / stage / "training_summary.json")
            summary["files"][f"{stage}_curve"] = str(out / stage / "training.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print("NIAH exact match in %, source -> converted:" if base else "NIAH exact match in %, converted:")
    print(side_by_side(base, table))
    source = "n/a" if base is None else f"{summary['source_accuracy']:.3f}"
    untrained = summary.get("converted_untrained_accuracy")
    untrained = "" if untrained is None else f" (before training {untrained:.3f})"
    print(f"source accuracy {source}, converted accuracy {summary['converted_accuracy']:.3f}{untrained} "
          f"-> {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
