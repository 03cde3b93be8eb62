"""Writing whole-model benchmark results: the Markdown card, a PNG of throughput and memory against length."""

from __future__ import annotations

from pathlib import Path

from ..lengths import short_length
from ..outputs import write_text_atomically, written_atomically
from .model import PHASES

__all__ = ["TABLE_HEADER", "format_card", "model_name", "plot_model", "write_outputs"]

TABLE_HEADER = ("| length | attention | prefill tok/s | decode tok/s | compiled decode tok/s | prefill peak GiB "
                "| decode peak GiB |")
_NAMES = {"superlinear": "Superlinear", "dense": "dense SDPA"}
_PHASE_NAMES = {"prefill": "prefill", "decode": "decode", "decode_compiled": "compiled decode"}


def _cell(phase: dict | None, key: str, spec: str) -> str:
    if not phase:
        return "-"
    status = phase.get("status", "ok")
    if status != "ok":
        return status.split(":", 1)[0]
    value = phase.get(key)
    return "-" if value is None else format(value, spec)


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _throughput_spec(value) -> str:
    return ",.0f" if value is not None and value >= 100 else ".2f"


def _tok_cell(phase: dict | None) -> str:
    value = (phase or {}).get("tokens_per_s")
    return _cell(phase, "tokens_per_s", _throughput_spec(value))


def model_name(result: dict) -> str:
    """The benchmarked model's name: its checkpoint folder's, or the one a model built in memory was given."""
    model = result["model"]
    return model.get("name") or Path(model["path"]).name


def _model_line(result: dict) -> str:
    m, env = result["model"], result["environment"]
    shape = [f"{m['model_type']}, {m['layers']} layers"]
    if m.get("pattern"):
        shape.append(f"pattern {m['pattern']}")
    shape.append(f"hidden {m['hidden_size']}")
    if m.get("attention_heads"):
        shape.append(f"{m['attention_heads']} query / {m.get('kv_heads')} KV heads of {m.get('head_dim')}")
    if m.get("routed_experts"):
        shape.append(f"{m['routed_experts']} routed experts ({m.get('experts_per_token')} per token)")
    shape.append(f"vocabulary {m['vocab_size']}")
    count = m["parameters"]
    count = f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
    shape.append(f"{count} parameters ({'/'.join(m['dtypes'])})")
    params = m.get("superlinear_params") or {}
    converted = (f"converted attention layers {m['converted_layers']} (W = {m.get('window')}, "
                 f"k = {params.get('num_spans')}, search key {params.get('search_key')})")
    if m.get("dense_attention_layers"):
        converted += f", kept dense {m['dense_attention_layers']}"
    lines = [f"{env['gpu']}; torch {env['torch']}, transformers {env['transformers']}, triton {env['triton']}.",
             f"Model: {'; '.join(shape)}; {converted}."]
    if m.get("origin") and m["origin"] != "converted checkpoint":
        lines.append(m["origin"].rstrip(".") + ".")
    return "\n".join(lines)


def format_card(result: dict) -> str:
    """The Markdown card: environment, model shape, protocol, one table (rows per length and attention, then the
    converted / dense ratios) and notes for every cell that is not a number."""
    s = result["settings"]
    weights = result["model"].get("weights_gib")
    lines = [f"## Whole-model benchmark: {model_name(result)}", "", _model_line(result),
             f"Prefill: the context in chunks of {s['chunk']} tokens through the model's cache. Decode: "
             f"{s['decode_tokens']} greedy tokens after it, eager, then compiled (torch.compile with CUDA graphs on a "
             "GPU, static cache; the Superlinear call inside the graph as one operation, or between the compiled graphs "
             "with SLCONVERT_ATTENTION_OP=0). Peak "
             "memory includes the weights" + (f" ({weights:.1f} GiB)." if weights is not None
                                              else "; it is measured on a GPU only."),
             "", TABLE_HEADER, "|---|---|---|---|---|---|---|"]
    by = {(r["attention"], r["length"]): r for r in result["rows"]}
    ratios = {r["length"]: r for r in result.get("ratios", [])}
    notes: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for length in sorted({r["length"] for r in result["rows"]}):
        for variant in ("superlinear", "dense"):
            row = by.get((variant, length))
            if row is None:
                continue
            lines.append(f"| {short_length(length)} | {_NAMES[variant]} | {_tok_cell(row.get('prefill'))} | "
                         f"{_tok_cell(row.get('decode'))} | {_tok_cell(row.get('decode_compiled'))} | "
                         f"{_cell(row.get('prefill'), 'peak_gib', '.1f')} | {_cell(row.get('decode'), 'peak_gib', '.1f')} |")
            for phase in PHASES:
                status = (row.get(phase) or {}).get("status", "ok")
                if status != "ok" and status.split(":", 1)[0] in ("unsupported", "not run"):
                    notes.setdefault(status, []).append(f"{_PHASE_NAMES[phase]}, {_NAMES[variant]}, {short_length(length)}")
                    counts[status] = counts.get(status, 0) + 1
        if length in ratios:
            r = ratios[length]
            lines.append(f"| {short_length(length)} | Superlinear / dense | {_ratio(r['prefill_speed'])} | "
                         f"{_ratio(r['decode_speed'])} | {_ratio(r['decode_compiled_speed'])} | "
                         f"{_ratio(r['prefill_memory'])} | {_ratio(r['decode_memory'])} |")
    if notes:
        lines.append("")
        for status, where in notes.items():
            phases = {w.split(",", 1)[0] for w in where}
            everywhere = len(phases) == 1 and counts[status] == len(result["rows"])
            lines.append(f"- {next(iter(phases)) + ' (every row)' if everywhere else '; '.join(where)}: {status}")
    modes = sorted({(r.get("decode_compiled") or {}).get("attention") for r in result["rows"]} - {None})
    if modes:
        lines += ["", f"Compiled decode: the Superlinear call ran {' and '.join(modes)}."]
    lines += _profile_lines(result["rows"])
    if not result.get("complete", True):
        lines += ["", "(incomplete: the run stopped before the last length)"]
    return "\n".join(lines) + "\n"


def _profile_lines(rows: list[dict], top: int = 3) -> list[str]:
    """One line per profiled eager decode: host against device time, launches, waits, and the costliest ops."""
    lines = []
    for row in rows:
        prof = row.get("decode_profile")
        if not prof:
            continue
        busy = "" if prof["device_busy_ms"] is None else f", device busy {prof['device_busy_ms']:.1f} ms"
        host = ", ".join(f"{o['op']} {o['ms']:.2f} ms ({o['calls']:.0f}x)" for o in prof["top_host_ops"][:top])
        kernels = ", ".join(f"{o['kernel'][:40]} {o['ms']:.2f} ms ({o['calls']:.0f}x)" for o in prof["top_kernels"][:top])
        lines.append(f"- {_NAMES[row['attention']]}, {short_length(row['length'])}: wall {prof['wall_ms']:.1f} ms"
                     f"{busy}; {prof['kernels']:.0f} kernels, {prof['launch_calls']:.0f} launch calls, "
                     f"{prof['synchronisations']:.0f} synchronisations, {prof['scalar_reads']:.0f} scalar reads per "
                     f"step; host: {host}" + (f"; device: {kernels}" if kernels else ""))
    if lines:
        steps = next(r["decode_profile"]["steps"] for r in rows if r.get("decode_profile"))
        lines = ["", f"Eager decode under the profiler (per step, mean of {steps} steps):"] + lines
    return lines


def plot_model(result: dict, path: Path) -> None:
    """Three panels against context length: prefill tokens/s, decode tokens/s (eager and compiled), peak GiB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"superlinear": "tab:blue", "dense": "black"}
    panels = [(axes[0], [("prefill", "tokens_per_s", "-o", "")], "prefill tokens/s"),
              (axes[1], [("decode", "tokens_per_s", "-o", "eager"), ("decode_compiled", "tokens_per_s", "--s",
                                                                       "compiled")], "decode tokens/s"),
              (axes[2], [("prefill", "peak_gib", "-o", "prefill"), ("decode", "peak_gib", "--s", "decode")],
               "peak memory, GiB")]
    for ax, series, title in panels:
        drawn = False
        for variant in ("superlinear", "dense"):
            for phase, key, style, suffix in series:
                pts = sorted((r["length"], r[phase][key]) for r in result["rows"] if r["attention"] == variant
                             and (r.get(phase) or {}).get("status") == "ok" and r[phase].get(key) is not None)
                if pts:
                    label = _NAMES[variant] + (f", {suffix}" if suffix else "")
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colors[variant], label=label)
                    drawn = True
        ax.set_xscale("log", base=2)
        if drawn and title != "peak memory, GiB":
            ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured on this device", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{model_name(result)} on {result['environment']['gpu']}")
    fig.tight_layout()
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_outputs(result: dict, out_dir: Path, stem: str = "model_bench") -> dict[str, Path]:
    """JSON, PNG and Markdown card under `out_dir`; returns their paths by kind."""
    from .report import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "png": out_dir / f"{stem}.png", "md": out_dir / f"{stem}.md"}
    write_json(result, paths["json"])
    plot_model(result, paths["png"])
    write_text_atomically(paths["md"], format_card(result))
    return paths
