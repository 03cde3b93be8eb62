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
