"""Writing benchmark results: JSON, a log-log PNG of time against length, and a text table."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_json", "plot_times", "format_table"]


def write_json(result: dict, path: Path) -> None:
    path.write_text(json.dumps(result, indent=2))


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
        for setting in sorted({r["setting"] for r in sel}):
            pts = sorted((r["length"], r["superlinear_ms"]) for r in sel if r["setting"] == setting and r["superlinear_ms"])
            if pts:
                label = (f"published kernels, {setting.split(' ', 1)[1]}" if setting.startswith("published ")
                         else f"Superlinear {setting}")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("milliseconds")
        ax.set_title(pass_name.replace("_", "+"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"one attention layer on {result['environment']['gpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def format_table(result: dict) -> str:
    lines = [f"GPU: {result['environment']['gpu']}  torch {result['environment']['torch']}  "
             f"triton {result['environment']['triton']}"]
    lines.append(f"{'setting':18} {'pass':17} {'length':>8} {'SL ms':>10} {'dense ms':>10} {'speedup':>8} "
                 f"{'SL TF/s':>8} {'dense TF/s':>10} {'SL GiB':>7} {'dense GiB':>9} {'SL graph':>9} {'dense graph':>11}")
    for r in result["rows"]:
        lines.append(
            f"{r['setting']:18} {r['pass']:17} {r['length']:>8} {_fmt(r['superlinear_ms'], '10.3f')} "
            f"{_fmt(r['dense_ms'], '10.3f')} {_fmt(r['speedup'], '8.2f')} {_fmt(r['superlinear_tflops'], '8.1f')} "
            f"{_fmt(r['dense_tflops'], '10.1f')} {_fmt(r['superlinear_peak_gib'], '7.2f')} "
            f"{_fmt(r['dense_peak_gib'], '9.2f')} {_fmt(r.get('superlinear_graph_ms'), '9.3f')} "
            f"{_fmt(r.get('dense_graph_ms'), '11.3f')}"
        )
    for r in result["rows"]:
        if "relative_difference_vs_slkernels" in r:
            lines.append(f"{r['setting']} at {r['length']}: output differs from slkernels by "
                         f"{r['relative_difference_vs_slkernels']:.3g} (relative L2)")
    return "\n".join(lines)
