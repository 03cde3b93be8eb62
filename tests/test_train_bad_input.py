"""Bad input to `slconvert train` (recipe files, overrides, damaged or finished runs, a full disk) is one line
`error: ...` with exit code 2, never a traceback, and leaves no half-written or rewritten output behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_train_helpers import converted

from slconvert.cli import main
from slconvert.errors import SlconvertError
from slconvert.training import loop
from slconvert.training.checkpoints import CHECKPOINTS, check_state, latest_checkpoint
from slconvert.training.preflight import preflight
from slconvert.training.recipe import load_recipe, unreached

RECIPE = "recipes/router-warmup.yaml"
# A run of a second or two on the quickest tiny hybrid (as test_train_helpers.fast_model).
SMALL = ["seq_len=64", "batch_size=1", "recall_rows=16", "router_rows=16", "data.corpus_tokens=2048", "save_every=1"]


def _train(*args: str) -> tuple[int, str]:
    """`slconvert train ARGS` in process; a traceback fails the test (catch_exceptions=False)."""
    result = CliRunner().invoke(main, ["train", *map(str, args), "--quiet"], catch_exceptions=False)
    return result.exit_code, result.stderr


def _one_error(code: int, stderr: str) -> str:
    """The run ended with exit 2 and exactly one stderr line, `error: ...`; returns it."""
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    return lines[0]


def _last_error(code: int, stderr: str) -> str:
    """For runs that trained first (their progress lines come before): one `error:` line, the last, no traceback."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in stderr, (code, stderr)
    return errors[0]


def _snapshot(root: Path) -> dict:
    """Every file under ROOT with its content digest and modification time: a rewrite shows in either."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _recipe_cli(tmp_path: Path, text: bytes | str, *overrides: str) -> str:
    """The one line `slconvert train` prints for the recipe file TEXT; the recipe is refused before any work."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "run"
    line = _one_error(*_train(path, "--model", tmp_path / "no-model", "--output", out, *overrides))
    assert not out.exists()
    return line


# ----- recipe files and overrides (no model needed) -----

def test_a_binary_recipe_file_is_one_line(tmp_path):
    """Random bytes used to end in a UnicodeDecodeError traceback."""
    line = _recipe_cli(tmp_path, random.Random(0).randbytes(512))
    assert "is not UTF-8 text" in line and "recipe.yaml" in line


@pytest.mark.parametrize("text, name", [
    ("1: 2\n", "recipe key 1 "),
    ("1: 2\nfoo: 3\n", "recipe key 1 "),
    ("data: {1: 2}\n", "recipe key data.1 "),
    ("lora: {null: 2}\n", "recipe key lora.null "),
])
def test_a_key_that_is_not_a_name_is_named(tmp_path, text, name):
    """YAML reads `1:` or `null:` as a non-string key, which used to end in a TypeError when sorted or joined."""
    line = _recipe_cli(tmp_path, text)
    assert name in line and "is not a name" in line


def test_a_recipe_path_that_is_a_directory_says_so(tmp_path):
    """It used to say "does not exist"."""
    (tmp_path / "recipes").mkdir()
    line = _one_error(*_train(tmp_path / "recipes", "--model", tmp_path / "m", "--output", tmp_path / "run"))
    assert "is a directory" in line and "recipe YAML file" in line


@pytest.mark.parametrize("spelled", ["1e3", "1.5e3", "2E+2"])
def test_integers_in_exponent_form_read_the_same_in_a_file_and_an_override(tmp_path, spelled):
    """YAML 1.1 reads `1e3` as a string: the file refused `max_steps: 1e3` that the override accepted."""
    path = tmp_path / "r.yaml"
    path.write_text(f"max_steps: {spelled}\ncurriculum: [{{seq_len: {spelled}, steps: {spelled}}}]\n")
    from_file = load_recipe(path)
    from_override = load_recipe(RECIPE, [f"max_steps={spelled}", f"curriculum=[{{seq_len: {spelled}, steps: {spelled}}}]"])
    value = int(float(spelled))
    assert from_file.max_steps == from_override.max_steps == value
    assert from_file.curriculum[0].seq_len == from_override.curriculum[0].steps == value


def test_a_fractional_integer_is_refused_alike_in_a_file_and_an_override(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("max_steps: 1e-1\n")
    with pytest.raises(SlconvertError, match=r"max_steps=0\.1 is invalid: use an integer >= 1") as from_file:
        load_recipe(path)
    with pytest.raises(SlconvertError) as from_override:
        load_recipe(RECIPE, ["max_steps=1e-1"])
    assert str(from_file.value) == str(from_override.value)


@pytest.mark.parametrize("value", ["0", "1"])
def test_seq_len_names_its_one_lower_bound(tmp_path, value):
    """`seq_len=0` said >= 1, then `seq_len=1` said >= 2 (two checks)."""
    line = _recipe_cli(tmp_path, "{}\n", f"seq_len={value}")
    assert f"seq_len={value}" in line and "use an integer >= 2" in line


def test_a_seed_past_numpy_range_is_refused_in_the_recipe(tmp_path):
    """numpy refused it with a traceback once the model was loaded."""
    line = _recipe_cli(tmp_path, "{}\n", "seed=4294967296")
    assert "seed=4294967296" in line and "<= 4294967295" in line
    assert load_recipe(RECIPE, ["seed=4294967295"]).seed == 2**32 - 1


@pytest.mark.parametrize("text, key, lines", [
    ("max_steps: 3\nlr: 1.0e-3\nmax_steps: 4\n", "max_steps", "(lines 1 and 3)"),
    ("data:\n  text: []\n  text: [a.txt]\n", "text", "(lines 2 and 3)"),
])
def test_a_key_set_twice_is_refused(tmp_path, text, key, lines):
    """YAML keeps the last of two values silently."""
    line = _recipe_cli(tmp_path, text)
    assert f"sets key '{key}' twice {lines}" in line


def test_a_key_set_twice_in_an_override_is_refused(tmp_path):
    line = _recipe_cli(tmp_path, "{}\n", "curriculum=[{seq_len: 64, seq_len: 96, steps: 1}]")
    assert "sets key 'seq_len' twice" in line


@pytest.mark.parametrize("override, said", [
    ("data.text=''", "recipe key data.text='' is invalid: each entry is the path of a text file or folder"),
    ("data.text=[null]", "recipe key data.text=None is invalid: each entry is the path"),
    ("data.text=[[a.txt]]", "recipe key data.text=['a.txt'] is invalid: each entry is the path"),
    ("adam_beta1=1", "recipe key adam_beta1=1 is invalid: use a number >= 0.0 and < 1.0"),
    ("adam_beta2=1.0", "recipe key adam_beta2=1.0 is invalid: use a number >= 0.0 and < 1.0"),
    ("trainable=''", "recipe key trainable='' is invalid: use one of router"),
])
def test_edge_values_are_refused_in_the_recipe(tmp_path, override, said):
    """data.text='' trained on every text file under the current folder; [null] and [[a.txt]] looked for files named
    "None" and "['a.txt']"; a beta of 1 ended in AdamW's ValueError traceback once the model had loaded; trainable=''
    was refused only after the tokenizer and corpus were read, as a pattern matching nothing."""
    line = _recipe_cli(tmp_path, "{}\n", override)
    assert line.startswith(f"error: {said}"), line


def test_a_folder_named_by_a_number_is_still_a_data_path():
    assert load_recipe(RECIPE, ["data.text=[2024, corpus]"]).data.text == ["2024", "corpus"]


@pytest.mark.parametrize("overrides, said", [
    (["max_steps=3", "warmup_steps=50"], "warmup_steps=50 is past max_steps=3: the learning rate ends at 6% of lr"),
    (["max_steps=3", "warmup_steps=0", "curriculum=[{seq_len: 64, steps: 3}, {seq_len: 96, steps: 2}]"],
     "the curriculum's stage(s) at 96 tokens start after max_steps=3 and never run (raise max_steps to 5"),
])
def test_what_max_steps_never_reaches_is_named(overrides, said):
    """Both used to run in silence: a run that never leaves its warm-up, a curriculum stage that never runs."""
    notes = unreached(load_recipe(RECIPE, overrides))
    assert len(notes) == 1 and notes[0].startswith(said), notes
    assert unreached(load_recipe(RECIPE, ["max_steps=100", "warmup_steps=100"])) == []


# ----- runs on disk: a damaged checkpoint, a finished run, a full disk -----

@pytest.fixture(scope="module")
def model() -> Path:
    return converted("granitemoehybrid", layers="MAMA")


@pytest.fixture(scope="module")
def finished(model, tmp_path_factory) -> Path:
    """A finished two-step run with a checkpoint at each step; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = CliRunner().invoke(main, ["train", RECIPE, "--model", str(model), "--output", str(out), "--quiet",
                                       "max_steps=2", *SMALL], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("damage", ["state folder deleted", "optimizer.bin truncated", "model.safetensors truncated"])
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(model, finished, tmp_path, damage):
    """accelerate's load_state used to end in a ValueError, RuntimeError or SafetensorError traceback; the state is
    now checked before the model is loaded."""
    out = _copy(finished, tmp_path)
    state = latest_checkpoint(out) / "state"
    if damage == "state folder deleted":
        shutil.rmtree(state)
    else:
        os.truncate(state / damage.split()[0], 100)
    before = _snapshot(out)
    line = _one_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=3", *SMALL))
    assert f"the checkpoint {latest_checkpoint(out)} is incomplete or damaged" in line
    assert "delete it to resume from an earlier checkpoint" in line
    assert _snapshot(out) == before


def test_a_state_that_fails_to_load_is_still_one_line(model, finished, tmp_path, monkeypatch):
    """What the check before loading cannot see (here: it is skipped) is caught around `load_state` itself."""
    out = _copy(finished, tmp_path)
    os.truncate(latest_checkpoint(out) / "state" / "optimizer.bin", 0)
    monkeypatch.setattr(loop, "check_state", lambda checkpoint: None)
    before = _snapshot(out)
    line = _last_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=3", *SMALL))
    assert "is incomplete or damaged (EOFError" in line
    assert _snapshot(out) == before


def test_resuming_a_finished_run_rewrites_nothing(model, finished, tmp_path):
    """It used to print "training steps 3-2" and rewrite the metrics, summary and final model, exit 0."""
    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    line = _one_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=2", *SMALL))
    assert f"the run in {out} already reached max_steps=2" in line and "raise max_steps" in line
    assert _snapshot(out) == before
    shutil.rmtree(latest_checkpoint(out))  # the last checkpoint before the end: the summary says it is finished
    before = _snapshot(out)
    _one_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=2", *SMALL))
    assert _snapshot(out) == before


def test_a_finished_run_without_checkpoints_points_out_of_the_circle(model, finished, tmp_path):
    """A finished run that kept no checkpoint was told "run without --resume" with --resume, and "pass --resume"
    without: each line sent the user to the other. Both now say what does work, and that command passes the
    checks."""
    out = _copy(finished, tmp_path)
    shutil.rmtree(out / CHECKPOINTS)
    before = _snapshot(out)
    for resume in (("--resume",), ()):
        line = _one_error(*_train(RECIPE, "--model", model, "--output", out, *resume, "max_steps=3", *SMALL))
        assert f"{out} holds a finished run (2 steps) and no checkpoint to resume" in line, line
        assert f"pass --model {out} and a new --output" in line
        assert _snapshot(out) == before
    assert preflight(load_recipe(RECIPE, ["max_steps=3", *SMALL]), out, tmp_path / "further", False) is None


def test_a_run_with_checkpoints_is_resumed_only_when_asked(model, finished, tmp_path):
    """An output folder holding checkpoints is refused as not empty without --resume (never resumed unasked); with
    --resume the checks hand back its newest checkpoint."""
    out = _copy(finished, tmp_path)
    recipe = load_recipe(RECIPE, ["max_steps=3", *SMALL])
    with pytest.raises(SlconvertError, match="already exists and is not empty; pass --resume"):
        preflight(recipe, model, out, False)
    assert preflight(recipe, model, out, True) == latest_checkpoint(out) is not None


def test_the_checks_before_loading_look_for_the_data_files(model, tmp_path):
    """The checks that run before the model is loaded find the files data.text names: one that is not there is
    refused by them, and the same list with the file written passes."""
    data = tmp_path / "notes.txt"
    recipe = load_recipe(RECIPE, [*SMALL, f"data.text=[{data}]"])
    with pytest.raises(SlconvertError, match="does not exist"):
        preflight(recipe, model, tmp_path / "run", False)
    data.write_text("Some text.")
    assert preflight(recipe, model, tmp_path / "run", False) is None


def test_an_empty_output_folder_is_a_fresh_start(model, tmp_path):
    """An output folder made ahead of the run and still empty passes the checks as a new one would; only a folder
    with something in it is refused without --resume."""
    out = tmp_path / "run"
    out.mkdir()
    recipe = load_recipe(RECIPE, SMALL)
    assert preflight(recipe, model, out, False) is None
    (out / "notes.txt").write_text("x")
    with pytest.raises(SlconvertError, match="already exists and is not empty"):
        preflight(recipe, model, out, False)


def test_the_distillation_teacher_is_checked_only_when_distillation_is_on(model, tmp_path):
    """distill_weight 0 needs no teacher, so its distill_teacher is never looked at; with a positive weight a folder
    without config.json is refused as no checkpoint before any work."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"")
    overrides = [*SMALL, f"distill_teacher={teacher}"]
    assert preflight(load_recipe(RECIPE, [*overrides, "distill_weight=0"]), model, tmp_path / "run", False) is None
    with pytest.raises(SlconvertError, match=f"the distillation teacher {teacher} .* is not a checkpoint directory"):
        preflight(load_recipe(RECIPE, [*overrides, "distill_weight=1"]), model, tmp_path / "run", False)


def _failing_at(monkeypatch, failing_step: int, error: BaseException) -> None:
    real = loop.Trainer._step

    def step(self, index):
        if index == failing_step:
            raise error
        return real(self, index)

    monkeypatch.setattr(loop.Trainer, "_step", step)


@pytest.mark.parametrize("error", [SlconvertError("the step failed"), KeyboardInterrupt()], ids=["failed", "stopped"])
def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing(model, tmp_path, monkeypatch, error):
    """It left recipe.yaml and an empty metrics.jsonl: the next run was refused (the folder is not empty) and so was
    --resume (no checkpoint), a folder to delete by hand. Its missing parents are made, and removed with it."""
    _failing_at(monkeypatch, 0, error)
    out = tmp_path / "runs" / "first"
    if isinstance(error, SlconvertError):
        assert "the step failed" in _last_error(*_train(RECIPE, "--model", model, "--output", out, "max_steps=2",
                                                         *SMALL))
    else:
        with pytest.raises(KeyboardInterrupt):
            loop.train(load_recipe(RECIPE, ["max_steps=2", *SMALL]), model, out, progress=False)
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))
    monkeypatch.undo()
    code, stderr = _train(RECIPE, "--model", model, "--output", out, "max_steps=2", *SMALL)
    assert code == 0, stderr


def test_a_run_stopped_after_a_checkpoint_keeps_it_to_resume(model, tmp_path, monkeypatch):
    _failing_at(monkeypatch, 1, SlconvertError("the step failed"))
    out = tmp_path / "run"
    code, stderr = _train(RECIPE, "--model", model, "--output", out, "max_steps=2", *SMALL)
    assert "the step failed" in _last_error(code, stderr)
    assert (f"note: the results finished before the failure are kept in {out}: checkpoints, metrics.jsonl, "
            "recipe.yaml, training.png; continue the run with --resume") in stderr
    assert latest_checkpoint(out).name == "step-000001"
    monkeypatch.undo()
    code, stderr = _train(RECIPE, "--model", model, "--output", out, "max_steps=2", "--resume", *SMALL)
    assert code == 0 and (out / "config.json").is_file(), stderr


@pytest.mark.parametrize("where", ["final model", "checkpoint"])
def test_a_full_disk_removes_the_partial_directory_and_keeps_the_checkpoint(model, tmp_path, monkeypatch, where):
    """The second model write runs out of space after a 0-byte config.json: the final model's (after a one-step
    run's checkpoint) or step 2's checkpoint's. It used to end in a traceback and leave the partial directory."""
    real, calls = loop.write_model_dir, []

    def full_disk(model_, state_dict, source, dest):
        calls.append(dest)
        if len(calls) == 2:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "config.json").write_bytes(b"")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest / "config.json"))
        return real(model_, state_dict, source, dest)

    monkeypatch.setattr(loop, "write_model_dir", full_disk)
    out = tmp_path / "run"
    steps = 1 if where == "final model" else 2
    line = _last_error(*_train(RECIPE, "--model", model, "--output", out, f"max_steps={steps}", *SMALL))
    assert "no space left on device" in line and "free space, then --resume" in line
    assert (f"the final model into {out}" if where == "final model" else "step-000002") in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    assert not (out / "config.json").exists() and not (out / "training_summary.json").exists()
    kept = latest_checkpoint(out)
    assert kept.name == "step-000001" and json.loads((kept / "trainer.json").read_text())["step"] == 1
    check_state(kept)
    assert load_file(kept / "model.safetensors")
    if where == "final model":  # --resume writes the final model alone: every step was trained
        monkeypatch.setattr(loop, "write_model_dir", real)
        result = CliRunner().invoke(main, ["train", RECIPE, "--model", str(model), "--output", str(out), "--quiet",
                                           "--resume", "max_steps=1", *SMALL], catch_exceptions=False)
        assert result.exit_code == 0 and "all 1 steps are trained" in result.stderr, result.output
        assert (out / "config.json").stat().st_size > 0
        assert json.loads((out / "training_summary.json").read_text())["steps"] == 1


@pytest.mark.parametrize("where, error", [
    ("final model", SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")),
    ("checkpoint", SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")),
    ("checkpoint", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")),
], ids=["final model, safetensors", "checkpoint, safetensors", "checkpoint, torch.save"])
def test_a_full_disk_in_the_libraries_writers_is_one_line(model, tmp_path, monkeypatch, where, error):
    """safetensors and torch.save report a full disk with their own errors (what each raised on a full tmpfs), not
    an OSError: they used to end in a traceback and leave the `.partial` directory. Each writer fails, after a few
    bytes, once it writes into the final model's (after a one-step run's checkpoint) or step 2's checkpoint's."""
    import transformers.modeling_utils

    failing = ".final.partial" if where == "final model" else ".step-000002.partial"
    patched = transformers.modeling_utils if isinstance(error, SafetensorError) else torch
    name = "safe_save_file" if isinstance(error, SafetensorError) else "save"
    real = getattr(patched, name)

    def full_disk(obj, path, *args, **kwargs):
        if failing not in str(path):
            return real(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"\0" * 64)
        raise error

    monkeypatch.setattr(patched, name, full_disk)
    out = tmp_path / "run"
    steps = 1 if where == "final model" else 2
    line = _last_error(*_train(RECIPE, "--model", model, "--output", out, f"max_steps={steps}", *SMALL))
    assert (f"the final model into {out}" if where == "final model" else "step-000002") in line
    assert "free space, then --resume" in line
    assert ("no space left on device" if isinstance(error, SafetensorError) else "unexpected pos 576 vs 534") in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    assert not (out / "config.json").exists()
    assert latest_checkpoint(out).name == "step-000001"


# ----- resuming: the metrics log, the checkpoint's state files -----

def test_a_half_written_last_metrics_line_is_dropped_on_resume(model, finished, tmp_path):
    """A run killed while it appended to metrics.jsonl leaves a last line without its end: it used to end in a
    JSONDecodeError traceback. The line belongs to a step after the checkpoint, which the resumed run redoes."""
    out = _copy(finished, tmp_path)
    log = out / "metrics.jsonl"
    whole = log.read_text()
    with open(log, "a") as handle:
        handle.write('{"step": 3, "loss": 0.12')
    code, stderr = _train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=3", *SMALL)
    assert code == 0 and "Traceback" not in stderr, stderr
    text = log.read_text()
    assert text.startswith(whole) and text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["step"] for r in records if "loss" in r and "event" not in r] == [1, 2, 3]


@pytest.mark.parametrize("damage, said", [
    ("binary", "line 1 is not UTF-8 text"),
    ("a line of garbage", "line 2 is not JSON"),
    ("a line that is no object", "line 2 is not a JSON object"),
    ("binary tail", "line {last} is not UTF-8 text"),
])
def test_a_damaged_metrics_log_is_one_line_and_changes_nothing(model, finished, tmp_path, damage, said):
    """Garbage that no interrupted write leaves used to end in a JSONDecodeError or UnicodeDecodeError traceback,
    after recipe.yaml was rewritten. It is now refused before the model is loaded."""
    out = _copy(finished, tmp_path)
    log = out / "metrics.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    garbage = {"binary": random.Random(0).randbytes(512) + b"\n",
               "a line of garbage": lines[0] + b"loss went down\n" + b"".join(lines[1:]),
               "a line that is no object": lines[0] + b"[1, 2]\n" + b"".join(lines[1:]),
               "binary tail": b"".join(lines) + b"\xff\xfe\x00\x81"}[damage]
    log.write_bytes(garbage)
    before = _snapshot(out)
    line = _one_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=3", *SMALL))
    assert f"{log} {said.format(last=len(lines) + 1)}" in line and "move the file away" in line
    assert _snapshot(out) == before


@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "model.safetensors", "random_states_0.pkl"])
def test_a_state_file_deleted_from_the_checkpoint_is_named_before_loading(model, finished, tmp_path, name):
    """A deleted optimizer.bin was found by accelerate once the model was loaded, and the line quoted the
    FileNotFoundError; a deleted random_states_0.pkl was skipped in silence."""
    out = _copy(finished, tmp_path)
    checkpoint = latest_checkpoint(out)
    (checkpoint / "state" / name).unlink()
    before = _snapshot(out)
    line = _one_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=3", *SMALL))
    assert f"the checkpoint {checkpoint} is incomplete or damaged (state/{name} is missing)" in line
    assert "Errno" not in line
    assert _snapshot(out) == before


def test_a_truncated_random_state_is_refused(model, finished, tmp_path):
    """accelerate skips random states that do not load, in silence: the run went on with other dropout masks."""
    out = _copy(finished, tmp_path)
    checkpoint = latest_checkpoint(out)
    os.truncate(checkpoint / "state" / "random_states_0.pkl", 100)
    before = _snapshot(out)
    line = _one_error(*_train(RECIPE, "--model", model, "--output", out, "--resume", "max_steps=3", *SMALL))
    assert f"the checkpoint {checkpoint} is incomplete or damaged (random_states_0.pkl is truncated" in line
    assert _snapshot(out) == before


@pytest.mark.parametrize("pattern", ["*.routr.*", "self_attn"])
def test_a_trainable_pattern_that_matches_nothing_is_named_before_loading(model, tmp_path, pattern):
    """The line came after the weights loaded (their progress bar before it) and showed one name of the model."""
    out = tmp_path / "run"
    line = _one_error(*_train(RECIPE, "--model", model, "--output", out, f"trainable=[{pattern!r}]",
                              "max_steps=1", *SMALL))
    assert f"trainable pattern {pattern!r} matches no parameter" in line
    assert line.count("'model.") >= 3 and "fix the pattern" in line
    assert not out.exists()


def test_a_short_run_of_a_long_warmup_says_so_and_trains(model, tmp_path):
    code, stderr = _train(RECIPE, "--model", model, "--output", tmp_path / "run", "max_steps=1", *SMALL)
    assert code == 0, stderr
    assert "warning: warmup_steps=50 is past max_steps=1" in stderr


def test_resuming_with_another_model_names_the_model_not_a_damaged_checkpoint(finished, tmp_path):
    """It said the checkpoint was "incomplete or damaged" and to delete it: the user's good checkpoint."""
    other = converted("nemotron_h")
    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    line = _last_error(*_train(RECIPE, "--model", other, "--output", out, "--resume", "max_steps=3", *SMALL))
    assert f"belongs to a run started from --model {converted('granitemoehybrid', layers='MAMA').resolve()}" in line
    assert f"does not load into --model {other}" in line and "resume with --model" in line
    assert "damaged" not in line and "delete" not in line
    assert _snapshot(out) == before


def test_a_stray_step_folder_takes_no_place_of_the_kept_checkpoints(tmp_path):
    """A step folder without trainer.json (no checkpoint) counted as the newest: with keep_checkpoints=1 the
    checkpoint just written was deleted and the stray folder kept."""
    from slconvert.training.checkpoints import CHECKPOINTS, TRAINER_FILE, prune

    root = tmp_path / CHECKPOINTS
    for step in (1, 2, 3):
        (root / f"step-00000{step}").mkdir(parents=True)
        (root / f"step-00000{step}" / TRAINER_FILE).write_text(json.dumps({"step": step}))
    (root / "step-000009").mkdir()
    prune(tmp_path, 1)
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000009"]
    assert latest_checkpoint(tmp_path).name == "step-000003"


def test_a_checkpoint_written_over_a_stray_step_folder_replaces_it(tmp_path):
    """A step folder without trainer.json (a crashed run's, or a copy) where the run now saves that step: the new
    checkpoint takes its place whole, with nothing of the stray folder left in it."""
    from slconvert.training.checkpoints import TRAINER_FILE, finish_checkpoint

    final, partial = tmp_path / "step-000002", tmp_path / ".step-000002.partial"
    final.mkdir()
    (final / "stale.bin").write_bytes(b"old")
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"new")
    finish_checkpoint(partial, final, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002"]
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors", TRAINER_FILE]
    assert json.loads((final / TRAINER_FILE).read_text()) == {"step": 2}


def test_a_final_model_cut_off_while_it_is_moved_into_place_has_no_config(tmp_path, monkeypatch):
    """The final model's files are moved into OUT with config.json last, so that a failure between two moves leaves
    OUT without config.json (no model loads from it); the next attempt moves every file again, the LoRA adapter's
    folder over the one the failed attempt left."""
    from slconvert.training import checkpoints

    def written(text: str) -> Path:
        folder = tmp_path / f".final-{text}.partial"
        (folder / "lora-adapter").mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json", "lora-adapter/adapter_config.json"):
            (folder / name).write_text(text)
        return folder

    out = tmp_path / "run"
    out.mkdir()
    real, moved = os.replace, []

    def replace(src, dst):
        if Path(src).name == "tokenizer.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        moved.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(checkpoints.os, "replace", replace)
    with pytest.raises(OSError):
        checkpoints.publish_final(written("old"), out)
    assert moved == ["lora-adapter", "model.safetensors"] and not (out / "config.json").exists()
    monkeypatch.setattr(checkpoints.os, "replace", real)
    checkpoints.publish_final(written("new"), out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["config.json", "lora-adapter/adapter_config.json", "model.safetensors", "tokenizer.json"]
    assert {(out / name).read_text() for name in files} == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".final-old.partial", "run"]


@pytest.mark.parametrize("trainer", [{"step": -1}, {"step": "2"}, {"step": 2.0}, {"step": True}, {}, [2]])
def test_a_trainer_file_without_a_step_count_is_named(tmp_path, trainer):
    """The step a checkpoint resumes at is a count of optimizer steps: anything else in trainer.json (hand-edited,
    or written by something else) is refused in one line, not carried into the step arithmetic of the run."""
    from slconvert.training.checkpoints import TRAINER_FILE, checkpoint_step

    checkpoint = tmp_path / "step-000002"
    checkpoint.mkdir()
    (checkpoint / TRAINER_FILE).write_text(json.dumps({"step": 2}))
    assert checkpoint_step(checkpoint) == 2
    (checkpoint / TRAINER_FILE).write_text(json.dumps(trainer))
    with pytest.raises(SlconvertError, match=f"{TRAINER_FILE} records no step; delete {checkpoint}"):
        checkpoint_step(checkpoint)


@pytest.mark.parametrize("step", ["true", '"2"', "1.5"])
def test_a_metrics_record_whose_step_is_no_count_is_named(tmp_path, step):
    """`records_until` keeps the records up to the resumed step by comparing steps: a step that is no integer
    (JSON's true is one to Python) is refused with its line instead."""
    from slconvert.training.metrics import read_records

    log = tmp_path / "metrics.jsonl"
    log.write_text(f'{{"step": 1, "loss": 2.0}}\n{{"step": {step}, "loss": 1.0}}\n')
    with pytest.raises(SlconvertError, match=f"{log} line 2 is not a JSON object with an integer step"):
        read_records(log)
    log.write_text('{"step": 1, "loss": 2.0}\n{"event": "span_recall", "when": "before"}\n')
    assert [r.get("step") for r in read_records(log)] == [1, None]


def test_every_trainable_pattern_is_checked_before_loading_and_shown_beside_names_of_the_whole_model():
    """Each pattern of a list is checked on the layout (not only the first: a later one would be refused only after
    the weights loaded). Beside a pattern like no name, the names shown are spread over the model (every third of
    nine: first, middle and last layers), not its first three; beside a typo, the names of the word it resembles."""
    from slconvert.training.trainable import _name_sample, check_patterns

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    check_patterns(model, ["0.*", "*.bias"])
    with pytest.raises(SlconvertError, match=r"trainable pattern '2\.\*' matches no parameter"):
        check_patterns(model, ["0.*", "2.*"])
    names = [f"model.layers.{i}.mixer.weight" for i in range(9)]
    assert _name_sample(names, "*.qqq.*") == ["model.layers.0.mixer.weight", "model.layers.3.mixer.weight",
                                              "model.layers.6.mixer.weight"]
    names += ["model.layers.4.mixer.router.weight", "model.layers.8.mixer.router.weight"]
    assert _name_sample(names, "*.routr.*") == ["model.layers.4.mixer.router.weight",
                                                "model.layers.8.mixer.router.weight"]
