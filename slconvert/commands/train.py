"""`slconvert train RECIPE --model PATH --output DIR [KEY=VALUE ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--model", "model", required=True, type=click.Path(path_type=Path),
              help="Converted checkpoint to start from (the output of `slconvert convert`); never modified.")
@click.option("--output", "output", required=True, type=click.Path(path_type=Path),
              help="Run directory: checkpoints, metrics.jsonl, training.png, and at the end the trained model.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its latest checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(recipe: Path, overrides, model: Path, output: Path, resume: bool, quiet: bool) -> None:
    """Train a converted model with RECIPE (see recipes/*.yaml); KEY=VALUE pairs override recipe keys.

    Several GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml -m slconvert.cli train ...
    """
    from ..training import load_recipe, train

    parsed = load_recipe(recipe, overrides)
    summary = train(parsed, model, output, resume=resume, progress=not quiet)
    last = summary.get("last") or {}
    line = f"trained {summary['steps']} steps -> {output}"
    if "loss" in last:
        line += f" (last loss {last['loss']:.4f}"
        if summary.get("span_recall_after"):
            mean = sum(summary["span_recall_after"].values()) / len(summary["span_recall_after"])
            line += f", span recall {mean:.3f}"
        line += ")"
    click.echo(line)
    warning = recall_warning(summary)
    if warning:
        click.echo(f"warning: {warning}", err=True)


def recall_warning(summary: dict, tolerance: float = 0.02) -> str | None:
    """A line when a router-only run lowered the span recall it started from: the router lost a ranking.

    The router losses can trade ranking for calibration (a flatter router lowers the KL while picking worse
    spans), most often with a learning rate too high for the router's size. When attention weights train
    too, the dense attention that recall is measured against moves as well, so a lower number says
    nothing about the routers and no line is written.
    """
    if not summary.get("routers_only"):
        return None
    before, after = summary.get("span_recall_before"), summary.get("span_recall_after")
    if not before or not after:
        return None
    mean_before, mean_after = sum(before.values()) / len(before), sum(after.values()) / len(after)
    if mean_after >= mean_before - tolerance:
        return None
    return (f"span recall fell from {mean_before:.3f} to {mean_after:.3f} during this run; the routers now pick "
            f"worse spans than before it. Keep the input checkpoint, or rerun with a lower lr (a tenth of this run's)")
