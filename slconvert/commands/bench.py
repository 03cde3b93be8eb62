"""`slconvert bench`: the attention benchmark of docs/semantics.md (Superlinear Triton kernels against dense SDPA)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SlconvertError

__all__ = ["bench"]


def _lengths(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().upper()
        if not part:
            continue
        mult = 1
        if part.endswith("K"):
            mult, part = 1024, part[:-1]
        elif part.endswith("M"):
            mult, part = 1 << 20, part[:-1]
        try:
            value = int(part) * mult
        except ValueError:
            raise SlconvertError(f"--lengths: {part!r} is not a length; write e.g. 16K,32K,65536") from None
        if value < 1:
            raise SlconvertError(f"--lengths: {value} must be positive")
        out.append(value)
    return out


@click.command("bench")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-output"),
              show_default=True, help="Folder for bench.json and bench.png.")
@click.option("--quick", is_flag=True, help="Short run: 16K-64K, no 1M, fewer repeats.")
@click.option("--lengths", default=None, help="Comma-separated lengths, e.g. 16K,32K,64K,128K,256K.")
@click.option("--setting", "settings", multiple=True, type=click.Choice(["released", "balanced"]),
              help="Superlinear setting(s) (default both).")
@click.option("--pass", "passes", multiple=True, type=click.Choice(["forward", "forward_backward", "decode"]),
              help="Passes to time (default all three).")
@click.option("--no-million", is_flag=True, help="Skip the 1M-token chunked prefill and 1M decode.")
def bench(out_dir: Path, quick: bool, lengths: str | None, settings: tuple, passes: tuple, no_million: bool) -> None:
    """Time one attention layer (B=1, 32 q / 2 kv heads, D=128, bf16): Superlinear vs dense SDPA.

    The forward rows also time the paper authors' published kernels when the `superlinear` package is
    installed.
    """
    import torch

    parsed_lengths = _lengths(lengths) if lengths else None
    if not torch.cuda.is_available():
        raise SlconvertError("slconvert bench needs a CUDA GPU and none is visible; run it on a machine with one")
    from tqdm import tqdm

    from ..benchmark import BenchSettings, run_benchmark
    from ..benchmark.report import format_table, plot_times, write_json

    cfg = BenchSettings()
    if quick:
        cfg.lengths, cfg.million, cfg.budget_ms = [16384, 32768, 65536], False, 500.0
    if parsed_lengths:
        cfg.lengths = parsed_lengths
    if settings:
        cfg.settings = list(settings)
    if passes:
        cfg.passes = list(passes)
    if no_million:
        cfg.million = False
    click.echo(f"GPU: {torch.cuda.get_device_name()}")
    n_steps = len(cfg.lengths) * len(cfg.passes) + int(cfg.million)
    bar = tqdm(total=n_steps, desc="bench", unit="step")

    def progress(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(1)

    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(cfg, progress, lambda partial: write_json(partial, out_dir / "bench.json"))
    bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / "bench.json")
    plot_times(result, out_dir / "bench.png")
    click.echo(format_table(result))
    click.echo(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")
