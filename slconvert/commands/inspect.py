"""`slconvert inspect MODEL`: the layer map, attention shape and what a conversion would change."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .convert import params_from, superlinear_options


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _count(n) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def render(summary: dict) -> str:
    att = summary["attention"]
    lines = [
        f"{summary['path']}: {summary['model_type']} ({summary['architecture']})",
        f"{summary['num_layers']} layers, {_count(summary['parameters'])} parameters",
        "",
        f"{'layer':>5}  {'kind':<22} {'params':>9}  conversion",
    ]
    for row in summary["layers"]:
        change = "superlinear" if row["converted"] else ("dense (kept)" if row["attention"] else "")
        lines.append(f"{row['index']:>5}  {row['kind']:<22} {_count(row['parameters']):>9}  {change}")
    sl = summary["superlinear"]
    kv = summary["kv_cache"]
    lines += [
        "",
        f"attention: H_q={att['heads_q']} H_kv={att['heads_kv']} D={att['head_dim']} RoPE={att['rope']} "
        f"scale={att['scale']:.4g}" + (" q/k-norm" if att["q_norm"] else "") + (" output-gate" if att["output_gate"] else ""),
        f"converted layers: {summary['converted_layers']}  kept dense: {summary['dense_attention_layers'] or 'none'}"
        f"  router parameters: {_count(summary['router_parameters'])}",
        f"KV cache ({kv['dtype']}): {_bytes(kv['bytes_per_1M_tokens'])} per 1M tokens "
        f"({_bytes(kv['bytes_per_token'])} per token, {len(summary['attention_layers'])} attention layers)",
    ]
    existing = summary.get("existing_conversion")
    if existing:
        lines.append(
            f"already converted (slconvert {existing.get('slconvert_version')}): layers {existing.get('layers')}, "
            f"W={existing.get('window')}, {', '.join(f'{k}={v}' for k, v in existing.get('params', {}).items())}"
        )
    lines.append(f"superlinear: {', '.join(f'{k}={v}' for k, v in sl['params'].items())}; window W={sl['window']}")
    for label, row in sl["attended_keys_per_query"].items():
        lines.append(
            f"  at {label:>4}: {row['superlinear']:,} keys per query vs dense {row['dense']:,} "
            f"({row['ratio']:.1f}x fewer), {row['anchors']:,} anchor scores"
        )
    return "\n".join(lines)


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@superlinear_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_command(model: Path, layers, keep_dense, as_json, **kwargs):
    """Show MODEL's layer map, attention shape, KV-cache size, and what `convert` would change."""
    from ..surgery import summarize

    params = params_from(kwargs)
    summary = summarize(model, params, layers=layers, keep_dense=keep_dense)
    click.echo(json.dumps(summary, indent=2) if as_json else render(summary))
