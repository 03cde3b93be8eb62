"""Collect the demo's stages into demo-output/summary.json (source and converted NIAH accuracy, settings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out_dir: str) -> None:
    out = Path(out_dir)
    evaluation = json.loads((out / "eval" / "summary.json").read_text())
    niah = evaluation["results"]["niah"]
    converted = json.loads((out / "converted" / "config.json").read_text())["superlinear"]
    training = out / "warmup" / "training_summary.json"
    summary = {
        "source_accuracy": niah["base_table"]["average"],
        "converted_accuracy": niah["table"]["average"],
        "lengths": niah["table"]["lengths"],
        "depths": niah["table"]["depths"],
        "superlinear": converted,
        "router_warmup": json.loads(training.read_text()) if training.is_file() else None,
        "files": {
            "heatmaps": str(out / "eval" / "niah_compare.png"),
            "evaluation": str(out / "eval" / "summary.md"),
            "training_curve": str(out / "warmup" / "training.png"),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(
        f"demo: source accuracy {summary['source_accuracy']:.3f}, converted accuracy "
        f"{summary['converted_accuracy']:.3f} -> {out / 'summary.json'}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
