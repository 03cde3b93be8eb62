"""Checkpoints of a run: a loadable converted model plus the full training state, written atomically.

Layout of OUT:

    recipe.yaml                 the validated recipe of the run (overrides applied)
    metrics.jsonl, training.png
    checkpoints/step-000100/    model files (config.json, safetensors, tokenizer) that `slconvert.load`
                                opens, `state/` (accelerate: model, optimizer, scheduler, RNG of every
                                process) and `trainer.json` (step, recipe), written last
    config.json, *.safetensors, tokenizer files ...   the final model, once the run completes

Every checkpoint is built under a hidden ``.step-N.partial`` name and renamed into place, so a crash
leaves either the previous checkpoint or the new one, never half of one. The final model files are
renamed into OUT one by one with config.json last: OUT is only a checkpoint once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

from ..checkpoint import carried_files
from ..errors import SlconvertError, first_line
from ..outputs import follow_umask

__all__ = ["CHECKPOINTS", "checkpoint_name", "latest_checkpoint", "write_model_dir", "publish_final", "prune",
           "checkpoint_step", "finished_steps", "written_or_removed", "damaged", "check_state"]

CHECKPOINTS = "checkpoints"
TRAINER_FILE = "trainer.json"
SUMMARY_FILE = "training_summary.json"
_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint (with trainer.json) of the highest step under OUT/checkpoints, if any."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return None
    found = []
    for item in root.iterdir():
        match = _STEP_DIR.fullmatch(item.name)
        if match and (item / TRAINER_FILE).is_file():
            found.append((int(match.group(1)), item))
    return max(found)[1] if found else None


def read_trainer_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / TRAINER_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise SlconvertError(f"{checkpoint / TRAINER_FILE} is unreadable; delete {checkpoint} to resume from an "
                             "earlier checkpoint") from None


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint was saved at (its trainer.json), refused in one line when unreadable."""
    state = read_trainer_state(checkpoint)
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise SlconvertError(f"{checkpoint / TRAINER_FILE} records no step; delete {checkpoint} to resume from an "
                             "earlier checkpoint")
    return step


def damaged(checkpoint: Path, reason: str) -> SlconvertError:
    return SlconvertError(f"the checkpoint {checkpoint} is incomplete or damaged ({reason}); delete it to resume "
                          "from an earlier checkpoint")


# What accelerate's save_state writes into a checkpoint's state folder, each as a single file (named here) or, under
# FSDP, as per-rank files or folders that begin with the same words: without any one of them nothing resumes as it
# ran (the random states are dropout's masks, which accelerate skips in silence when they do not load).
_STATE_FILES = {"model.safetensors": ("model", "pytorch_model"), "optimizer.bin": ("optimizer",),
                "scheduler.bin": ("scheduler",), "random_states_0.pkl": ("random_states",)}


def check_state(checkpoint: Path) -> None:
    """Before the model is loaded (so that it fails in a second): the checkpoint's accelerate state is there with
    every part of it (`_STATE_FILES`), its safetensors files are whole (the header covers the file) and its torch
    files (.bin, and the random states' .pkl) are complete zip archives (a truncated one has lost its central
    directory at the end). `Trainer` still catches what loading it raises."""
    from safetensors import SafetensorError, safe_open

    state = Path(checkpoint) / "state"
    if not state.is_dir() or not any(state.iterdir()):
        raise damaged(checkpoint, "its state folder is missing or empty")
    names = [item.name for item in state.iterdir()]
    for expected, starts in _STATE_FILES.items():
        if not any(name.startswith(starts) for name in names):
            raise damaged(checkpoint, f"state/{expected} is missing")
    for path in sorted(state.rglob("*")):
        name = path.relative_to(state)
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), "pt"):
                    pass
            except (SafetensorError, OSError) as err:
                raise damaged(checkpoint, f"{name}: {first_line(err)}") from None
        elif path.suffix in (".bin", ".pkl") and not zipfile.is_zipfile(path):
            raise damaged(checkpoint, f"{name} is truncated or not a torch file")


def finished_steps(out: Path) -> int | None:
    """The steps of the run whose final model OUT holds (its training_summary.json, written last), if any."""
    try:
        steps = json.loads((Path(out) / SUMMARY_FILE).read_text()).get("steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


# The words torch.save's zip writer puts in the RuntimeError it raises when a write fails (a full disk: it names
# no cause), and those of the I/O error inside a SafetensorError (its cause, then the OS error number).
_TORCH_WRITER = ("PytorchStreamWriter", "inline_container")
_SAFETENSORS_IO = re.compile(r"I/O error: (.*?)(?: \(os error \d+\))?$")


def _write_failure(err: BaseException) -> str | None:
    """Why a write failed, as a clause of a sentence, or None when `err` is no failed write: an OSError, the
    SafetensorError safetensors raises for its own I/O errors, or torch.save's RuntimeError (neither is an
    OSError). Any other error, a CUDA one included, is not a disk's and keeps its own traceback."""
    from safetensors import SafetensorError

    if isinstance(err, OSError):
        text = err.strerror or str(err) or type(err).__name__
    elif isinstance(err, SafetensorError):
        text = first_line(err)
        found = _SAFETENSORS_IO.search(text)
        text = found.group(1) if found else text
    elif isinstance(err, RuntimeError) and any(word in str(err) for word in _TORCH_WRITER):
        text = f"torch.save failed with '{first_line(err).rsplit('] . ', 1)[-1]}', as on a full disk"
    else:
        return None
    return text[:1].lower() + text[1:]


@contextlib.contextmanager
def written_or_removed(partial: Path, what: str, then: str):
    """Whatever stops the writes into `partial` removes it, so no half-written directory is left and the
    checkpoints before it stay; a failed write (`_write_failure`: a full disk, a quota, a lost mount) ends in one
    line naming `what` and the reason."""
    try:
        yield
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        reason = _write_failure(err)
        if reason is None:
            raise
        raise SlconvertError(f"could not write {what} ({reason}); {then}") from None


def write_model_dir(model, state_dict: dict, source: Path, dest: Path) -> None:
    """Write a converted checkpoint directory: weights from `state_dict`, config and tokenizer from `source`.

    The source's config.json (with its `superlinear` block) is copied verbatim, so the result loads
    exactly like the input did; only the weights change.
    """
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, state_dict=state_dict, safe_serialization=True)
    for item in carried_files(source, card=True):  # the card of a converted model describes this one too
        shutil.copyfile(item, dest / item.name)
    shutil.copyfile(Path(source) / "config.json", dest / "config.json")
    follow_umask(dest)


def finish_checkpoint(partial: Path, final: Path, trainer: dict) -> None:
    """Write trainer.json (the completeness marker) and rename the partial directory into place."""
    (partial / TRAINER_FILE).write_text(json.dumps(trainer, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def prune(out: Path, keep: int) -> None:
    """Keep only the `keep` newest complete checkpoints (0 keeps all); called once a new one is in place.

    Not accelerate's `ProjectConfiguration(total_limit=...)`: it deletes the oldest checkpoint before writing the
    new one, so a failed save would leave none (tests/test_train.py shows it).
    """
    if keep <= 0:
        return
    root = Path(out) / CHECKPOINTS
    # A step folder without trainer.json is no checkpoint (`latest_checkpoint` skips it too): it takes no place of
    # the `keep` newest, which a stray `step-000999` would otherwise take from the one just written.
    steps = sorted((int(m.group(1)), p) for p in root.iterdir()
                   if (m := _STEP_DIR.fullmatch(p.name)) and (p / TRAINER_FILE).is_file())
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def publish_final(model_dir: Path, out: Path) -> None:
    """Move a written model directory's files (and sub-folders, e.g. a LoRA adapter) into OUT, config.json last."""
    names = sorted(p.name for p in model_dir.iterdir())
    names.sort(key=lambda n: n == "config.json")
    for name in names:
        target = Path(out) / name
        if (model_dir / name).is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(model_dir / name, target)
    shutil.rmtree(model_dir, ignore_errors=True)
