"""Figures a person would rather look at than read: NIAH heatmaps, their comparison, lm-eval scores, span recall.

The NIAH heatmap follows the convention readers know: depth (rows) against context length
(columns), red -> yellow -> green on 0..100, the average in the title, skipped cells grey.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..lengths import short_length  # noqa: E402
from ..outputs import written_atomically  # noqa: E402

__all__ = ["niah_heatmap", "niah_comparison", "lm_eval_bars", "span_recall_heatmap"]


def _matrix(table: dict) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in table["scores"]], dtype=float)


def _draw(ax, matrix: np.ndarray, table: dict, title: str, *, cmap="RdYlGn", vmin=0.0, vmax=100.0, fmt="{:.0f}"):
    cm = plt.get_cmap(cmap).with_extremes(bad="#bbbbbb")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cm, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(table["lengths"])), [short_length(n) for n in table["lengths"]])
    ax.set_yticks(range(len(table["depths"])), [f"{d:g}%" for d in table["depths"]])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=10)
    if matrix.size <= 400:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, "skip" if np.isnan(value) else fmt.format(value), ha="center", va="center", fontsize=7)
    return image


def _avg(table: dict) -> str:
    return "n/a" if table.get("average") is None else f"{table['average']:.1f}"


def niah_heatmap(table: dict, path: Path, name: str) -> Path:
    figsize = (max(4.5, 2.2 + 0.7 * len(table["lengths"])), max(3.2, 1.8 + 0.4 * len(table["depths"])))
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    image = _draw(ax, _matrix(table), table, f"{name}: NIAH {table['task']}\naverage {_avg(table)}")
    fig.colorbar(image, ax=ax, label="score")
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def niah_comparison(table: dict, base: dict, diff: dict, path: Path, name: str, base_name: str) -> Path:
    """Model, source and their difference (model - source) side by side in one figure."""
    width = max(4.5, 2.2 + 0.7 * len(table["lengths"]))
    height = max(3.2, 1.8 + 0.4 * len(table["depths"]))
    fig, axes = plt.subplots(1, 3, figsize=(3 * width, height), layout="constrained")
    for ax, tab, title in ((axes[0], table, name), (axes[1], base, f"{base_name} (source)")):
        image = _draw(ax, _matrix(tab), tab, f"{title}\naverage {_avg(tab)}")
        fig.colorbar(image, ax=ax, label="score")
    image = _draw(axes[2], _matrix(diff), diff, f"difference (converted - source)\naverage {_avg(diff)}", cmap="RdBu",
                  vmin=-100.0, vmax=100.0, fmt="{:+.0f}")
    fig.colorbar(image, ax=axes[2], label="score difference")
    fig.suptitle(f"NIAH {table['task']}: converted vs source")
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def lm_eval_bars(rows: list[dict], path: Path, name: str, base_name: str | None = None) -> Path:
    """One horizontal bar per (task, metric) row of the lm-eval table (RULER's rows are its lengths), the model's
    score next to the source's when there is one; scores are lm-eval's, on 0..1 for the needle tasks."""
    labels = [f"{r['task']} · {short_length(int(r['metric'])) if str(r['metric']).isdigit() else r['metric']}" for r in rows]
    series = [(name, [r.get(name) for r in rows], "#2b7bba")]
    if base_name is not None:
        series.append((f"{base_name} (source)", [r.get(f"{base_name} (source)") for r in rows], "#bbbbbb"))
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7.0, max(2.4, 1.2 + 0.35 * len(rows) * len(series))), layout="constrained")
    y = np.arange(len(rows))
    for k, (label, values, color) in enumerate(series):
        data = np.array([np.nan if v is None else float(v) for v in values])
        ax.barh(y + (k - (len(series) - 1) / 2) * height, np.nan_to_num(data), height, label=label, color=color)
        for yi, value in zip(y + (k - (len(series) - 1) / 2) * height, data):
            if np.isnan(value):
                ax.text(0.01, yi, "n/a", va="center", fontsize=7)
            else:  # past the bar's end, on its side of zero (a log-likelihood is negative)
                ax.text(value + (0.01 if value >= 0 else -0.01), yi, f"{value:.2f}", va="center", fontsize=7,
                        ha="left" if value >= 0 else "right")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    scores = [float(v) for _, values, _ in series for v in values if isinstance(v, (int, float))]
    ax.set_xlim(min([0.0] + scores) * 1.12, max([1.0] + scores) * 1.12)
    ax.set_xlabel("score")
    ax.set_title(f"lm-eval tasks: {name}" + (f" vs {base_name} (source)" if base_name else ""), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def span_recall_heatmap(matrix: list[list[float]], layers: list[int], path: Path, name: str, average: float) -> Path:
    """Recall per (layer row, head column) in percent."""
    data = np.array(matrix, dtype=float) * 100.0
    figsize = (max(4.5, 2.5 + 0.5 * data.shape[1]), max(3.0, 1.6 + 0.45 * data.shape[0]))
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    image = ax.imshow(data, cmap="RdYlGn", vmin=0.0, vmax=100.0, aspect="auto")
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    ax.set_yticks(range(data.shape[0]), [str(layer) for layer in layers])
    ax.set_title(f"{name}: span recall\naverage {average * 100:.1f}%", fontsize=10)
    if data.size <= 400:
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="dense mass in spans + window (%)")
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
