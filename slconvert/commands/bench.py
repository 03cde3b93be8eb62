"""`slconvert bench`: the attention benchmark of docs/semantics.md (Superlinear Triton kernels against dense SDPA),
or with --model the whole-model benchmark of a converted checkpoint (slconvert/benchmark/model.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SlconvertError
from ..lengths import parse_lengths, short_length
from ..outputs import check_output_dir, removed_on_failure

__all__ = ["bench", "model_bench_settings", "bench_and_report"]


def _elsewhere(given: list[str], where: str, fix: str) -> SlconvertError:
    """Options given to the benchmark they do not belong to, in one line ("{}" in `fix`: it / them)."""
    one = len(given) == 1
    return SlconvertError(f"{', '.join(given)} {'applies' if one else 'apply'} to {where}; "
                          + fix.format("it" if one else "them"))


@click.command("bench")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-output"),
              show_default=True, help="Folder for bench.json and bench.png.")
@click.option("--quick", is_flag=True, help="Short run: 16K-64K, no 1M, fewer repeats.")
@click.option("--lengths", default=None, help="Comma-separated lengths, e.g. 16K,32K,64K,128K,256K.")
@click.option("--setting", "settings", multiple=True, type=click.Choice(["released", "balanced"]),
              help="Superlinear setting(s) (default both).")
@click.option("--search-key", "search_keys", multiple=True, type=click.Choice(["anchor", "span_mean"]),
              help="Search key(s) of each setting (default anchor; span_mean rows are labelled so, and their decode "
                   "rows also time steps that keep the running sums between calls).")
@click.option("--pass", "passes", multiple=True, type=click.Choice(["forward", "forward_backward", "decode"]),
              help="Passes to time (default all three).")
@click.option("--no-million", is_flag=True, help="Skip the 1M-token chunked prefill and 1M decode.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Whole-model benchmark of this converted checkpoint instead of one layer (default lengths "
                   "32K,128K,1M).")
@click.option("--chunk", default=None, help="--model: prefill tokens per forward call, e.g. 32K (default 32K).")
@click.option("--decode-tokens", type=int, default=None, help="--model: timed decode tokens per length (default 8).")
@click.option("--profile-decode", type=int, default=None,
              help="--model: also run N eager decode steps under the profiler (host vs device time, launches, waits).")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="--model: also time decode under torch.compile with CUDA graphs (default: on a GPU).")
@click.option("--no-dense", is_flag=True, help="--model: skip the dense-attention baseline.")
@click.option("--device", default=None, help="--model: cuda, cuda:1, cpu (default: cuda when visible, else cpu).")
@click.option("--dtype", default=None, help="--model: bfloat16, float16, float32 or auto (default: the checkpoint's).")
@click.option("--force", is_flag=True, help="Write into an --out that holds an earlier benchmark, replacing it.")
def bench(out_dir: Path, quick: bool, lengths: str | None, settings: tuple, search_keys: tuple, passes: tuple,
          no_million: bool, model_path: Path | None, chunk: str | None, decode_tokens: int | None,
          profile_decode: int | None, compile_: bool | None, no_dense: bool, device: str | None,
          dtype: str | None, force: bool) -> None:
    """Time one attention layer (B=1, 32 q / 2 kv heads, D=128, bf16): Superlinear vs dense SDPA.

    The forward rows also time the paper authors' published kernels when the `superlinear` package is
    installed: each of its GQA prefill paths (generic `prefill_gqa`, bucketed
    `fused_prefill_with_swtriton_bucketed_gqa`) in its own row, the faster one named per length.

    With --model PATH: time a whole converted model instead (prefill through the cache in chunks, decode eager
    and compiled, peak memory) and the same model with dense SDPA attention, writing model_bench.json/.png/.md.
    """
    import torch

    check_output_dir(out_dir, {"--model": model_path}, results=("bench.json", "model_bench.json"), force=force)
    model_only = {"--chunk": chunk, "--decode-tokens": decode_tokens, "--profile-decode": profile_decode,
                  "--compile/--no-compile": compile_,
                  "--no-dense": no_dense or None, "--device": device, "--dtype": dtype}
    if model_path is not None:
        layer_only = {"--quick": quick or None, "--setting": settings or None, "--search-key": search_keys or None,
                      "--pass": passes or None, "--no-million": no_million or None}
        given = [name for name, value in layer_only.items() if value is not None]
        if given:
            raise _elsewhere(given, "the one-layer benchmark", "leave {} out with --model")
        _bench_model(model_path, out_dir, lengths, chunk, decode_tokens, profile_decode, compile_, not no_dense,
                     device, dtype)
        return
    given = [name for name, value in model_only.items() if value is not None]
    if given:
        raise _elsewhere(given, "the whole-model benchmark", "add --model PATH")
    parsed_lengths = parse_lengths(lengths) if lengths is not None else None
    if not torch.cuda.is_available():
        raise SlconvertError("slconvert bench needs a CUDA GPU and none is visible; run it on a machine with one")
    from tqdm import tqdm

    from ..benchmark import BenchSettings, run_benchmark
    from ..benchmark.host import device_name
    from ..benchmark.report import format_table, plot_times, write_json

    cfg = BenchSettings()
    if quick:
        cfg.lengths, cfg.million, cfg.budget_ms = [16384, 32768, 65536], False, 500.0
    if parsed_lengths:
        cfg.lengths = parsed_lengths
    if settings:
        cfg.settings = list(settings)
    if search_keys:
        cfg.search_keys = list(dict.fromkeys(search_keys))
    if passes:
        cfg.passes = list(passes)
    if no_million:
        cfg.million = False
    click.echo(f"GPU: {device_name()}")
    n_steps = len(cfg.lengths) * len(cfg.passes) + int(cfg.million)

    def progress(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(1)

    # A failure before the first step's result removes what this run wrote, one after it keeps the results so far
    # (bench.json, marked incomplete); the bar is closed first, so that the error starts a line of its own.
    with removed_on_failure(out_dir, finished=lambda: [out_dir / "bench.json"]):
        with tqdm(total=n_steps, desc="bench", unit="step") as bar:
            result = run_benchmark(cfg, progress, lambda partial: write_json(partial, out_dir / "bench.json"))
        write_json(result, out_dir / "bench.json")
        plot_times(result, out_dir / "bench.png")
    click.echo(format_table(result))
    click.echo(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")


def _bench_model(path: Path, out_dir: Path, lengths, chunk, decode_tokens, profile_decode, compile_, dense: bool, device,
                 dtype) -> None:
    """`slconvert bench --model PATH`: the whole-model benchmark, with a progress bar and the card at the end."""
    from ..benchmark.model import load_for_bench

    cfg = model_bench_settings(path, lengths, chunk, decode_tokens, compile_, dense, device, dtype,
                               profile_decode=profile_decode)
    model = load_for_bench(path, cfg.device, cfg.dtype)  # a checkpoint it refuses gets its line alone
    _note_lengths_past_context(path, cfg.lengths)
    bench_and_report(model, cfg, out_dir)


def _note_lengths_past_context(path: Path, lengths) -> None:
    """Timing a model past the context its config declares is allowed (speed does not depend on what it learned,
    and the default lengths reach 1M on purpose), but the reader of its table should know: one `note:` line."""
    from ..checkpoint import read_config
    from ..evaluation.models import config_max_length

    context = config_max_length(read_config(path))
    beyond = [n for n in lengths if context is not None and n > context]
    if beyond:
        click.echo(f"note: {', '.join(short_length(n) for n in beyond)} exceed the {short_length(context)} tokens "
                   f"{path}/config.json declares; those rows time speed only (the model never saw such lengths)",
                   err=True)


def model_bench_settings(path: Path | None, lengths: str | None, chunk: str | None, decode_tokens: int | None,
                         compile_: bool | None, dense: bool, device: str | None, dtype: str | None, *,
                         profile_decode: int | None = None):
    """The whole-model benchmark's settings from its options as typed (one `error:` line for bad input), with
    the device resolved and checked. `path` None: a model built in memory (scripts/build_nano_shape.py --bench)."""
    from ..benchmark.model import ModelBenchSettings
    from ..dtypes import resolve_dtype

    cfg = ModelBenchSettings(model=None if path is None else str(path))
    if lengths is not None:
        cfg.lengths = parse_lengths(lengths, example="32K,128K,1M")
    if chunk:
        parsed = parse_lengths(chunk, "--chunk", "32K")
        if len(parsed) != 1:
            raise SlconvertError(f"--chunk: {chunk!r} is not one length; write e.g. 32K")
        cfg.chunk = parsed[0]
    if decode_tokens is not None:
        if decode_tokens < 1:
            raise SlconvertError(f"--decode-tokens: {decode_tokens} must be at least 1")
        cfg.decode_tokens = decode_tokens
    if profile_decode is not None:
        if profile_decode < 1:
            raise SlconvertError(f"--profile-decode: {profile_decode} must be at least 1 (leave it out for none)")
        cfg.profile_decode = profile_decode
    resolve_dtype(dtype)  # an unknown name is refused here, before anything loads
    cfg.compile, cfg.dense, cfg.device, cfg.dtype = compile_, dense, device, dtype or "auto"
    cfg.device = cfg.resolved().device  # checked there (`devices.resolve_device`)
    return cfg


def bench_and_report(model, cfg, out_dir: Path, *, name: str | None = None, origin: str | None = None) -> dict:
    """Run the whole-model benchmark on a live model with a progress bar, write model_bench.json/.png/.md under
    `out_dir` (after every length too, so that a run cut short leaves its numbers) and print
    the card; returns the result."""
    from tqdm import tqdm

    from ..benchmark.model import bench_model
    from ..benchmark.model_report import format_card, write_outputs

    def progress(label: str, units: int) -> None:
        bar.set_postfix_str(label)
        if units:
            bar.update(units)

    # As `bench`: a failure keeps the lengths measured so far (model_bench.json, marked incomplete), else removes
    # what this run wrote; the bar is closed first, so that the error starts a line of its own.
    with removed_on_failure(out_dir, finished=lambda: [out_dir / "model_bench.json"]):
        with tqdm(total=len(cfg.lengths) * 3 * (2 if cfg.dense else 1), desc="model bench", unit="phase") as bar:
            result = bench_model(model, cfg, progress, lambda partial: write_outputs(partial, out_dir), name=name,
                                 origin=origin)
        paths = write_outputs(result, out_dir)
    click.echo(format_card(result))
    click.echo(f"wrote {paths['json']}, {paths['png']} and {paths['md']}")
    return result
