"""The demo's defaults in the Makefile: the method's sparsity, the shipped model's own conversion, and the whole
chain run at tiny sizes; and the conversion study that `make study-large` runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from module_file import load_module
from slkernels import SuperlinearConfig

from slconvert.commands.convert import convert_command, params_from
from slconvert.training import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _make_variable(name: str) -> str:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name} \?=(.*)$", text, flags=re.MULTILINE)
    assert match, f"{name} is not set in the Makefile"
    return match.group(1).strip()


def _demo_params():
    # DEMO_SETTINGS parsed exactly as `slconvert convert` parses them
    options = convert_command.make_context("convert", ["model", "out", *shlex.split(_make_variable("DEMO_SETTINGS"))])
    kwargs = dict(options.params)
    assert kwargs["keep_dense"] is None and kwargs["layers"] is None  # every attention layer is converted
    return params_from(kwargs)


def test_demo_converts_at_the_methods_sparsity():
    params = _demo_params()
    assert params.search_power <= 0.6
    longest = max(int(x) for x in _make_variable("DEMO_LENGTHS").split(","))
    assert longest >= 16 * params.window, (longest, params.window)


def test_shipped_model_is_the_demos_conversion():
    shipped = ROOT / _make_variable("DEMO_SHIPPED")
    block = json.loads((shipped / "config.json").read_text())["superlinear"]
    assert block["params"] == _demo_params().to_dict()
    assert (shipped / "model.safetensors").stat().st_size < 20 * 2**20
    for name in ("README.md", "training.jsonl", "training.png", "recipe.yaml", "training_summary.json"):
        assert (shipped / name).is_file(), name


def test_pipeline_converts_with_the_span_mean_key_at_the_released_shape():
    """`make pipeline`'s conversion (SETTINGS, parsed as `slconvert convert` parses it) keeps the paper's released
    shape and takes the span-mean search key, without which the conversion study's models did not retrieve again."""
    options = convert_command.make_context("convert", ["model", "out", *shlex.split(_make_variable("SETTINGS"))])
    params = params_from(dict(options.params))
    assert params.search_key == "span_mean"
    assert params.to_dict() == SuperlinearConfig(search_key="span_mean").to_dict()


def test_demo_training_overrides_are_valid_recipe_keys():
    load_recipe(ROOT / "recipes" / "demo-curriculum.yaml", shlex.split(_make_variable("DEMO_CURRICULUM")))


def test_study_large_trains_the_staged_schedule_that_reached_the_teacher():
    """`make study-large` runs study run 13's job: 2700 steps of 8 x 4K, the last quarter at 2 x 16K (88.5M tokens),
    `mixers` at the balanced shape with the span-mean key, its --train overrides as the study checks and applies
    them (recipes/conversion-study.yaml, the study's own keys from its options)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    args = shlex.split(re.search(r"^study-large:.*\n\t(.*)$", text, flags=re.MULTILINE).group(1))
    option = {name: args[args.index(name) + 1] for name in ("--steps", "--batch-size", "--seq-len", "--presets",
                                                            "--shapes", "--keys", "--train")}
    assert (option["--presets"], option["--shapes"], option["--keys"]) == ("mixers", "balanced", "span_mean")
    study = load_module(ROOT / "scripts" / "conversion_study.py")
    overrides = [o for o in option["--train"].split(";") if o]
    study.check_train_overrides(overrides)
    batch = option["--batch-size"]
    recipe = load_recipe(ROOT / "recipes" / "conversion-study.yaml", [
        f"max_steps={option['--steps']}", f"seq_len={option['--seq-len']}", f"batch_size={batch}",
        f"micro_batch_size={batch}", *overrides])
    assert [(s.seq_len, s.steps, recipe.batch_of(s)) for s in recipe.stages()] == [(4096, 2025, 8), (16384, 675, 2)]
    assert recipe.tokens_before(recipe.max_steps) == 2700 * 32768
    assert recipe.lm_average == "sample" and recipe.data.niah_tasks.count("multivalue") == 4


# The demo at the smallest sizes that still run every stage: one NIAH prompt of 128 tokens per model, one training
# step. Its cost is mostly six interpreter starts importing torch and transformers (about 40 s of CPU in all).
TINY_DEMO = {
    "DEMO_LENGTHS": "128",
    "DEMO_DEPTHS": "50",
    "DEMO_SAMPLES": "1",
    "DEMO_CURRICULUM": "max_steps=1 seq_len=128 batch_size=1 micro_batch_size=1 warmup_steps=0 log_every=1 "
                       "data.corpus_tokens=2048",
}


def _niah(path: Path) -> dict:
    return json.loads(path.read_text())["results"]["niah"]


def test_demo_runs_every_stage_at_tiny_sizes(tmp_path):
    venv = Path(sys.prefix)  # the environment running the tests provides the demo's commands
    assert (venv / "bin" / "slconvert").is_file(), f"{venv}/bin has no slconvert: install the package (make install)"
    stamp = tmp_path / "installed"  # newer than pyproject.toml, so make takes the environment as installed
    stamp.touch()
    newer = max(stamp.stat().st_mtime, (ROOT / "pyproject.toml").stat().st_mtime + 1)
    os.utime(stamp, (newer, newer))
    out = tmp_path / "demo"
    variables = {"STAMP": stamp, "VENV": venv, "DEMO_OUT": out, **TINY_DEMO}
    run = subprocess.run(["make", "--no-print-directory", "demo", *(f"{k}={v}" for k, v in variables.items())],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode == 0, f"make demo failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    # the stages, in order, as make echoed them before running each
    steps = [line for line in run.stdout.splitlines() if line.startswith(f"{venv}/bin/slconvert ")]
    position = 0
    for word in ("inspect", "convert", "eval", "train recipes/demo-curriculum.yaml", "eval",
                 "eval " + _make_variable("DEMO_SHIPPED")):
        hits = [i for i, line in enumerate(steps) if i >= position and f"slconvert {word}" in line]
        assert hits, f"`slconvert {word}` missing after step {position} of the demo: {steps}"
        position = hits[0] + 1

    # what each stage left behind
    assert json.loads((out / "converted" / "config.json").read_text())["superlinear"]["params"] == \
        _demo_params().to_dict()
    assert _niah(out / "eval-converted" / "summary.json")["table"]["lengths"] == [128]
    assert json.loads((out / "curriculum" / "training_summary.json").read_text())["steps"] == 1
    assert (out / "curriculum" / "model.safetensors").is_file()
    trained = _niah(out / "eval" / "summary.json")
    assert trained["table"]["lengths"] == trained["base_table"]["lengths"] == [128]  # beside the source
    assert _niah(out / "eval-shipped" / "summary.json")["table"]["lengths"] == [128]
    summary = json.loads((out / "summary.json").read_text())
    # each fraction is its evaluation's grid average; the source (the shipped teacher) finds the needle at 128 tokens
    for key, table in (("source_accuracy", trained["base_table"]), ("converted_accuracy", trained["table"]),
                       ("converted_untrained_accuracy", _niah(out / "eval-converted" / "summary.json")["table"]),
                       ("shipped_accuracy", _niah(out / "eval-shipped" / "summary.json")["table"])):
        assert summary[key] == pytest.approx(table["average"] / 100.0, abs=1e-6), key
    assert summary["source_accuracy"] == 1.0
    assert summary["curriculum_training"]["steps"] == 1
