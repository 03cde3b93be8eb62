"""Reading what `compare_passes.py --decode` prints: one JSON line per measurement, `{"setting", "length", "layers",
"step", "rep", "ms"}` or `{..., "max_diff"}`, among other lines. The results folders' plot scripts read their logs
through here."""

from __future__ import annotations

import collections
import json
from pathlib import Path


def read(path: Path) -> tuple[dict, dict, list]:
    """(times, diffs, steps) of one log: times[(setting, length, step)] the us per step of each pass, diffs[...] the
    largest difference of the step's output from the first package's, steps in the order they first appear."""
    times, diffs, steps = collections.defaultdict(list), {}, []
    for line in open(path):
        if not line.startswith('{"setting'):
            continue
        r = json.loads(line)
        key = (r["setting"], r["length"], r["step"])
        if "ms" in r:
            times[key].append(r["ms"] * 1000)
        else:
            diffs[key] = r["max_diff"]
        if r["step"] not in steps:
            steps.append(r["step"])
    return times, diffs, steps


def rows(times: dict, diffs: dict) -> list[dict]:
    """One dict per (setting, length, step): its times (us) and largest difference, for a summary.json."""
    return [dict(setting=s, length=n, step=st, us=t, max_diff=diffs.get((s, n, st))) for (s, n, st), t in times.items()]


def print_table(times: dict, diffs: dict, steps: list, width: int = 60) -> None:
    """Per setting, a line per step: each length's times (both passes) and the largest difference in brackets."""
    for setting in ("released", "balanced"):
        lengths = sorted({k[1] for k in times if k[0] == setting})
        print(setting, " ".join(f"{n // 1024}K" for n in lengths))
        for step in steps:
            cells = ["/".join(f"{x:.1f}" for x in times[(setting, n, step)])
                     + f" ({diffs.get((setting, n, step), 0):.0e})" for n in lengths]
            print(f"  {step[:width]:{width}s}", "  ".join(cells))


def points(times: dict, setting: str, step: str) -> tuple[list, list]:
    """(lengths, best us per step) of one step of one setting, by length: a line of a plot."""
    best = sorted((n, min(t)) for (s, n, st), t in times.items() if s == setting and st == step)
    return [n for n, _ in best], [t for _, t in best]


def step_axes(ax, xlabel: str, title: str, legend_size: int) -> None:
    """The decode plots' axes: both logarithmic, time per step (16 steps a graph) against cache length."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("us per decode step (16 steps a graph)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)


def summarize(folder: Path, logs: dict, note_key: str = "what") -> dict:
    """A results folder's logs (`{log name: note}`, each `folder/NAME.log`): prints each one's table under its name and
    note, and writes them all, with the card of `card-call1.txt`, to `folder/summary.json` (the note under
    `note_key`)."""
    summary = {"card": (folder / "card-call1.txt").read_text().strip()}
    for name, note in logs.items():
        times, diffs, steps = read(folder / f"{name}.log")
        print(f"== {name}: {note}")
        summary[name] = {note_key: note, "rows": rows(times, diffs)}
        print_table(times, diffs, steps)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot_by_length(ax, times: dict, lines, title: str, legend_size: int = 7) -> None:
    """One panel: a line per (step, label, style) of `lines` for each setting (released blue, balanced orange), dense
    SDPA (a step named "dense SDPA", black) for released only, on `step_axes` against cache length."""
    for setting, color in (("released", "C0"), ("balanced", "C1")):
        for step, label, style in lines:
            lengths, us = points(times, setting, step)
            if lengths and (step != "dense SDPA" or setting == "released"):
                ax.plot(lengths, us, style, color="k" if step == "dense SDPA" else color,
                        label=label if step == "dense SDPA" else f"{setting}: {label}")
    step_axes(ax, "cache length (keys)", title, legend_size)


def draw_steps(folder: Path, summary: dict, panels, name: str = "steps.png") -> None:
    """A results folder's figure: a `plot_by_length` panel per (log name, lines) of `panels`, side by side, titled with
    the log's name and the card of `summary` (`summarize`), saved as `folder/name`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (log, lines) in zip(axes[0], panels):
        plot_by_length(ax, read(folder / f"{log}.log")[0], lines, f"{log}, {summary['card'].split(',')[0]}")
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
