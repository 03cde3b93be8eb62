"""Checks that need no model: converted input, output location, data files, resume point.

They run before anything is loaded, so a bad command line fails in a second with one line.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SlconvertError
from ..outputs import check_output_dir
from .checkpoints import CHECKPOINTS, finished_steps, latest_checkpoint
from .data import find_text_files

__all__ = ["preflight", "distill_path"]


def distill_path(recipe, model_path: Path) -> Path:
    """The checkpoint directory of the distillation teacher: recipe key `distill_teacher`, where "source" is the
    dense checkpoint a converted model was made from, as its conversion record (config.json) names it."""
    path, where = Path(recipe.distill_teacher), "distill_teacher"
    if recipe.distill_teacher == "source":
        from ..loading import converted_block

        where = f"the source recorded in {model_path / 'config.json'} (distill_teacher=source)"
        source = converted_block(model_path).get("source")
        recorded = source.get("path") if isinstance(source, dict) else None
        if not isinstance(recorded, str) or not recorded:
            raise SlconvertError(f"{model_path / 'config.json'} records no source path (superlinear.source.path); "
                                 "set distill_teacher to the dense checkpoint the model was converted from")
        path = Path(recorded)
    if not (path / "config.json").is_file():
        raise SlconvertError(f"the distillation teacher {path} ({where}) is not a checkpoint directory; set "
                             "distill_teacher to the dense checkpoint the model was converted from")
    return path


def preflight(recipe, model_path: Path, out: Path, resume: bool) -> Path | None:
    """Every check that needs no model: model kind, output location, data files, resume point."""
    from ..loading import is_converted

    model_path, out = Path(model_path), Path(out)
    if not (model_path / "config.json").is_file():
        raise SlconvertError(f"model {model_path} is not a checkpoint directory (no config.json); pass the output "
                             "of `slconvert convert`")
    converted = is_converted(model_path)
    if recipe.model_kind == "converted" and not converted:
        raise SlconvertError(f"model {model_path} is not converted (config.json has no 'superlinear' block); "
                             "run `slconvert convert` on it first, or set model_kind: dense to train it as it is")
    if recipe.model_kind == "dense" and converted:
        raise SlconvertError(f"model {model_path} is converted but the recipe says model_kind: dense; "
                             "set model_kind: converted (the default)")
    check_output_dir(out, {"model": model_path}, "--output")  # made with its parents by the run
    if recipe.data.text:
        find_text_files(recipe.data.text)
    if recipe.distill_weight > 0:
        distill_path(recipe, model_path)
    checkpoint = latest_checkpoint(out)
    if resume and checkpoint is not None:
        return checkpoint
    # A finished run that kept no checkpoint (save_every past its steps, or 0) can only be trained further from its
    # final model: pointing at --resume, or away from it, would send the user in a circle.
    finished = finished_steps(out) if checkpoint is None and out.is_dir() else None
    if finished is not None:
        raise SlconvertError(f"{out} holds a finished run ({finished} steps) and no checkpoint to resume; to train "
                             f"further, pass --model {out} and a new --output")
    if resume:
        raise SlconvertError(f"no checkpoint to resume under {out / CHECKPOINTS}; run without --resume")
    if out.exists() and any(out.iterdir()):
        raise SlconvertError(f"output {out} already exists and is not empty; pass --resume to continue that run "
                             "or choose a new directory")
    return None
