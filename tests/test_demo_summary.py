"""scripts/demo_summary.py: the demo's summary.json from the stages' outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _table(average: float) -> dict:
    return {"task": "single", "lengths": [256, 512], "depths": [0, 100], "scores": [[average, average]] * 2,
            "average": average, "scored": 8}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", str(ROOT / "scripts" / "demo_summary.py"), str(out)],
                          capture_output=True, text=True, cwd=ROOT)


def test_summary_reports_source_untrained_and_trained_accuracy(tmp_path):
    _write(tmp_path / "eval" / "summary.json",
           {"results": {"niah": {"table": _table(95.0), "base_table": _table(100.0)}}, "models": []})
    _write(tmp_path / "eval-converted" / "summary.json", {"results": {"niah": {"table": _table(40.0)}}})
    _write(tmp_path / "converted" / "config.json", {"superlinear": {"params": {"search_power": 0.95}}})
    _write(tmp_path / "curriculum" / "training_summary.json", {"steps": 150})
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["source_accuracy"] == 1.0
    assert summary["converted_accuracy"] == 0.95
    assert summary["converted_untrained_accuracy"] == 0.4
    assert summary["curriculum_training"] == {"steps": 150} and "warmup_training" not in summary
    assert "before training 0.400" in done.stdout and "100.0 -> 95.0" in done.stdout


def test_summary_puts_the_shipped_model_and_the_settings_beside_the_run(tmp_path):
    _write(tmp_path / "eval" / "summary.json",
           {"results": {"niah": {"table": _table(30.0), "base_table": _table(100.0)}}, "models": []})
    _write(tmp_path / "eval-shipped" / "summary.json",
           {"results": {"niah": {"table": _table(97.5)}}, "models": [{"path": "slconvert/assets/tiny-converted"}]})
    _write(tmp_path / "converted" / "config.json", {"superlinear": {"window": 15, "params": {
        "search_power": 0.5, "span_power": 0.5, "search_key": "span_mean"}}})
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["converted_accuracy"] == 0.3 and summary["shipped_accuracy"] == 0.975
    assert summary["shipped_model"] == "slconvert/assets/tiny-converted"
    assert (summary["search_power"], summary["span_power"], summary["window"], summary["search_key"]) == (
        0.5, 0.5, 15, "span_mean")
    assert "100.0 -> 30.0 | 97.5" in done.stdout and "shipped GPU-trained 0.975" in done.stdout


def test_summary_without_an_evaluation_is_one_line(tmp_path):
    done = _run(tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
