"""Writing benchmark results: JSON, a log-log PNG of time against length, and a text table."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import write_text_atomically, written_atomically

__all__ = ["write_json", "plot_times", "format_table", "published_fastest", "setting_label"]

PUBLISHED = "published "


def write_json(result: dict, path: Path) -> None:
    write_text_atomically(path, json.dumps(result, indent=2))


def setting_label(row: dict) -> str:
    """The row's setting; a published-kernel row always names its path ("published bucketed released").

    Rows written before the bucketed path was timed carry no path: they came from the generic `prefill_gqa`.
    """
    setting = row["setting"]
    if setting.startswith(PUBLISHED) and "published_path" not in row:
        return f"{PUBLISHED}generic {setting[len(PUBLISHED):]}"
    return setting


def _published_setting(row: dict) -> str:
    return row.get("published_setting") or row["setting"].split()[-1]


def published_fastest(rows: list[dict]) -> list[dict]:
    """Per setting, pass and length with timed published rows: the faster path, every path's ms, slkernels' ms.

    `slkernels_times_faster` is the faster path's time over slkernels' (same setting, pass and length, same run).
    """
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["setting"].startswith(PUBLISHED) and r.get("superlinear_ms") is not None:
            key = (_published_setting(r), r["pass"], r["length"])
            groups.setdefault(key, {})[r.get("published_path", "generic")] = r
    out = []
    for (setting, pass_name, length), by_path in groups.items():
        path = min(by_path, key=lambda p: by_path[p]["superlinear_ms"])
        ms = by_path[path]["superlinear_ms"]
        ours = next((r["superlinear_ms"] for r in rows if r["setting"] == setting and r["pass"] == pass_name
                     and r["length"] == length and r.get("superlinear_ms")), None)
        out.append({"setting": setting, "pass": pass_name, "length": length, "path": path,
                    "function": by_path[path].get("published_function"), "ms": ms,
                    "ms_by_path": {p: r["superlinear_ms"] for p, r in by_path.items()},
                    "slkernels_ms": ours, "slkernels_times_faster": ms / ours if ours else None})
    return out


def plot_times(result: dict, path: Path) -> None:
    """One panel per pass: dense and each Superlinear setting, milliseconds against length, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    passes = [p for p in ("forward", "forward_backward", "decode") if any(r["pass"] == p for r in rows)]
    if not passes:
        return
    fig, axes = plt.subplots(1, len(passes), figsize=(5 * len(passes), 4), squeeze=False)
    for ax, pass_name in zip(axes[0], passes):
        sel = [r for r in rows if r["pass"] == pass_name]
        dense = {}
        for r in sel:
            if r["dense_ms"] is not None:
                dense[r["length"]] = r["dense_ms"]
        if dense:
            xs = sorted(dense)
            ax.plot(xs, [dense[x] for x in xs], "k-o", label="dense SDPA")
        for setting in sorted({setting_label(r) for r in sel}):
            pts = sorted((r["length"], r["superlinear_ms"]) for r in sel
                         if setting_label(r) == setting and r["superlinear_ms"])
            if pts:
                if setting.startswith(PUBLISHED):
                    path_name, name = setting[len(PUBLISHED):].split(" ", 1)
                    label, style = f"published kernels, {path_name} path, {name}", "--s"
                else:
                    label, style = f"Superlinear {setting}", "-o"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("milliseconds")
        ax.set_title(pass_name.replace("_", "+"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"one attention layer on {result['environment']['gpu']}")
    fig.tight_layout()
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _fmt(x, spec):
    """`x` in `spec`, or "-" in the spec's width (so that the columns stay aligned)."""
    return format(x, spec) if x is not None else "-".rjust(int(spec.split(".")[0]) if spec[0].isdigit() else 0)


def _published_lines(result: dict) -> list[str]:
    """The published-kernel notes: skipped paths, failed rows, output differences, the faster path per length."""
    rows = result["rows"]
    lines = []
    info = result["environment"].get("published_kernels")
    if isinstance(info, dict) and info.get("installed"):
        for path_name, reason in info.get("skipped", {}).items():
            lines.append(f"published {path_name} path skipped: {reason}")
    for r in rows:
        if r.get("published_error"):
            lines.append(f"{setting_label(r)} {r['pass']} at {r['length']}: failed ({r['published_error']})")
    for r in rows:
        if "relative_difference_vs_slkernels" in r:
            lines.append(f"{setting_label(r)} at {r['length']}: output differs from slkernels by "
                         f"{r['relative_difference_vs_slkernels']:.3g} (relative L2)")
    for f in result.get("published_fastest") or published_fastest(rows):
        others = ", ".join(f"{p} {ms:.1f} ms" for p, ms in f["ms_by_path"].items() if p != f["path"])
        head = (f"published {f['setting']} {f['pass']} at {f['length']}: "
                + (f"faster path {f['path']}, {f['ms']:.1f} ms ({others})" if others
                   else f"only path timed {f['path']}, {f['ms']:.1f} ms"))
        if f["slkernels_times_faster"]:
            head += f"; slkernels {f['slkernels_ms']:.1f} ms, {f['slkernels_times_faster']:.1f}x faster"
        lines.append(head)
    return lines


def format_table(result: dict) -> str:
    lines = [f"GPU: {result['environment']['gpu']}  torch {result['environment']['torch']}  "
             f"triton {result['environment']['triton']}"]
    width = max([18] + [len(setting_label(r)) for r in result["rows"]])
    lines.append(f"{'setting':{width}} {'pass':17} {'length':>8} {'SL ms':>10} {'dense ms':>10} {'speedup':>8} "
                 f"{'SL TF/s':>8} {'dense TF/s':>10} {'SL GiB':>7} {'dense GiB':>9} {'SL graph':>9} {'dense graph':>11} "
                 f"{'SL queued':>9} {'dense queued':>12} {'queued':>7}")
    for r in result["rows"]:
        lines.append(
            f"{setting_label(r):{width}} {r['pass']:17} {r['length']:>8} {_fmt(r['superlinear_ms'], '10.3f')} "
            f"{_fmt(r['dense_ms'], '10.3f')} {_fmt(r['speedup'], '8.2f')} {_fmt(r['superlinear_tflops'], '8.1f')} "
            f"{_fmt(r['dense_tflops'], '10.1f')} {_fmt(r['superlinear_peak_gib'], '7.2f')} "
            f"{_fmt(r['dense_peak_gib'], '9.2f')} {_fmt(r.get('superlinear_graph_ms'), '9.3f')} "
            f"{_fmt(r.get('dense_graph_ms'), '11.3f')} {_fmt(r.get('superlinear_queued_ms'), '9.3f')} "
            f"{_fmt(r.get('dense_queued_ms'), '12.3f')} {_fmt(r.get('queued_speedup'), '7.2f')}"
        )
    kept = [r for r in result["rows"] if r.get("superlinear_graph_kept_sums_ms") is not None]
    lines += [f"{setting_label(r)} decode at {r['length']}: SL graph {r['superlinear_graph_kept_sums_ms']:.3f} ms a step "
              "with the span-mean running sums kept between steps (slkernels.LayerState)" for r in kept]
    return "\n".join(lines + _published_lines(result))
