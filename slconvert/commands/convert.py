"""`slconvert convert MODEL OUT`: write a Superlinear-attention copy of a hybrid checkpoint.

The six Superlinear options (defaults: the paper's released setting) and the layer choice are shared with
`slconvert inspect`, which imports them from here.
"""

from __future__ import annotations

from pathlib import Path

import click
from slkernels import SuperlinearConfig
from slkernels.config import SEARCH_KEYS

from ..checkpoint import check_output_location, holds_tokenizer
from ..router import ROUTER_INITS

_RELEASED = SuperlinearConfig.released()


def superlinear_options(function):
    """Add --sw-index ... --forward-factor, --search-key (defaults: the paper's released setting) and
    --layers/--keep-dense."""
    options = [
        click.option("--sw-index", type=int, default=_RELEASED.sw_index, show_default=True,
                     help="Sets the sliding window: W = floor((sw+1)^(1/search_power)) - 1."),
        click.option("--num-spans", type=int, default=_RELEASED.num_spans, show_default=True,
                     help="Spans selected per query (k)."),
        click.option("--search-power", type=float, default=_RELEASED.search_power, show_default=True,
                     help="Anchors per query grow like t^p (0 < p < 1)."),
        click.option("--span-power", type=float, default=_RELEASED.span_power, show_default=True,
                     help="Span length grows like t^rho (0 < rho < 1)."),
        click.option("--backward-factor", type=float, default=_RELEASED.backward_factor, show_default=True,
                     help="A span reaches ceil(b_b * t^rho) tokens before its anchor."),
        click.option("--forward-factor", type=float, default=_RELEASED.forward_factor, show_default=True,
                     help="A span reaches ceil(b_f * t^rho) tokens after its anchor."),
        click.option("--search-key", type=click.Choice(SEARCH_KEYS), default=_RELEASED.search_key, show_default=True,
                     help="What the router scores at each anchor: the anchor's key (the paper's rule) or the mean "
                          "key of the span it opens (span_mean: retrieval after conversion needs far less "
                          "training; the Triton kernels run both keys)."),
        click.option("--layers", default=None, help="Attention layers to convert, as model layer numbers, e.g. 3,7 or 4-9 (default: all)."),
        click.option("--keep-dense", default=None, help="Attention layers to leave dense, as model layer numbers (negative: from the end; "
                     "`slconvert inspect` lists them), e.g. 5,42."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def params_from(kwargs: dict) -> SuperlinearConfig:
    """Build (and so validate, its window included) the SuperlinearConfig from the parsed options."""
    return SuperlinearConfig(
        sw_index=kwargs.pop("sw_index"),
        num_spans=kwargs.pop("num_spans"),
        search_power=kwargs.pop("search_power"),
        span_power=kwargs.pop("span_power"),
        backward_factor=kwargs.pop("backward_factor"),
        forward_factor=kwargs.pop("forward_factor"),
        search_key=kwargs.pop("search_key"),
    )


@click.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@superlinear_options
@click.option("--router-init", type=click.Choice(ROUTER_INITS), default="host_logits", show_default=True,
              help="host_logits: search score = the host attention's own logit at the anchor; random: seeded.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of --router-init random.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Cast floating-point weights (auto keeps the checkpoint's dtypes).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def convert_command(model: Path, out: Path, layers, keep_dense, router_init, seed, dtype, force, quiet, **kwargs):
    """Convert the softmax attention layers of MODEL to Superlinear attention; write the checkpoint to OUT.

    OUT is built in a temporary directory beside it and renamed at the end; MODEL is never modified.
    """
    from ..surgery import convert, plan_conversion
    from ..surgery.convert import check_dtype

    params = params_from(kwargs)
    check_output_location(Path(model), Path(out), force)  # before the plan reads the checkpoint
    plan = plan_conversion(
        model, params, layers=layers, keep_dense=keep_dense, router_init=router_init, seed=seed, dtype=check_dtype(dtype)
    )
    block = convert(plan, out, force=force, progress=not quiet)
    click.echo(
        f"converted layers {block['layers']} of {block['source']['model_type']} "
        f"(W = {block['window']}, k = {params.num_spans}, search key {params.search_key}) -> {out}"
    )
    if not holds_tokenizer(block["files"]):
        click.echo(f"note: {model} holds no tokenizer, so neither does {out}; train and eval need one: save it "
                   "there with tokenizer.save_pretrained", err=True)
