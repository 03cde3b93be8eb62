"""Result files: JSON and CSV per mode, printed tables, and the one summary every run ends with.

The summary (summary.json + summary.md) records what is needed to trust or reproduce a number: the
command's configuration, seeds, package versions and the card (or CPU) it ran on.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import platform
from importlib import metadata
from pathlib import Path

import torch

from ..outputs import write_text_atomically, written_atomically

__all__ = ["environment", "write_json", "write_csv", "format_grid", "diff_table", "write_summary"]

_PACKAGES = ("slconvert", "torch", "transformers", "triton", "lm_eval", "accelerate", "tokenizers", "safetensors")


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU: {cpu} ({torch.get_num_threads()} threads)"


def environment() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "device": device_name(),
            "packages": versions, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _clean(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data) -> Path:
    return write_text_atomically(path, json.dumps(_clean(data), indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    with written_atomically(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
    return path


def _cell(value, signed: bool = False) -> str:
    if value is None:
        return "skip"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def format_grid(table: dict, title: str, signed: bool = False) -> str:
    """A Markdown table, depths as rows and lengths as columns (the heatmap's layout)."""
    head = "| depth \\ length | " + " | ".join(str(n) for n in table["lengths"]) + " |"
    rule = "|---" * (len(table["lengths"]) + 1) + "|"
    rows = [f"| {d:g}% | " + " | ".join(_cell(v, signed) for v in row) + " |"
            for d, row in zip(table["depths"], table["scores"])]
    average = "n/a" if table.get("average") is None else _cell(table["average"], signed)
    return "\n".join([f"{title} (average {average})", "", head, rule, *rows])


def diff_table(table: dict, base: dict) -> dict:
    """Model minus source, cell by cell (None where either is missing)."""
    scores = [[(a - b) if a is not None and b is not None else None for a, b in zip(ra, rb)]
              for ra, rb in zip(table["scores"], base["scores"])]
    both = [v for row in scores for v in row if v is not None]
    return {**table, "scores": scores, "average": (sum(both) / len(both)) if both else None}


def grid_rows(table: dict) -> list[dict]:
    return [{"depth": d, "length": n, "score": v} for d, row in zip(table["depths"], table["scores"])
            for n, v in zip(table["lengths"], row)]


def write_summary(out_dir: Path, *, command: dict, seeds: dict, models: list[dict], results: dict,
                  sections: list[str]) -> tuple[Path, Path]:
    """summary.json (everything) and summary.md (the same, readable, with the result tables)."""
    env = environment()
    data = {"command": command, "seeds": seeds, "environment": env, "models": models, "results": results}
    json_path = write_json(out_dir / "summary.json", data)
    lines = ["# slconvert eval summary", "",
             f"- time: {env['time']}", f"- device: {env['device']}", f"- python {env['python']} on {env['platform']}",
             "- packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
             "- seeds: " + ", ".join(f"{k}={v}" for k, v in seeds.items()), ""]
    lines.append("## Models")
    lines.append("")
    for m in models:
        lines.append("- " + ", ".join(f"{k}: {v}" for k, v in m.items()))
    lines += ["", "## Configuration", "", "```json", json.dumps(_clean(command), indent=2, default=str), "```", ""]
    lines += ["## Results", ""]
    for section in sections:
        lines += [section, ""]
    md_path = write_text_atomically(out_dir / "summary.md", "\n".join(lines))
    return json_path, md_path
