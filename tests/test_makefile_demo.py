"""The demo's defaults in the Makefile: the method's sparsity, the shipped model's own conversion, a runnable chain."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

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


def test_demo_training_overrides_are_valid_recipe_keys():
    load_recipe(ROOT / "recipes" / "demo-curriculum.yaml", shlex.split(_make_variable("DEMO_CURRICULUM")))


def test_demo_dry_run_chains_convert_curriculum_and_both_evaluations():
    dry = subprocess.run(["make", "-n", "demo", "STAMP=Makefile"], capture_output=True, text=True, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr
    steps = [line for line in dry.stdout.splitlines() if "slconvert " in line]
    position = 0
    for word in ("inspect", "convert", "eval", "train recipes/demo-curriculum.yaml", "eval",
                 "eval " + _make_variable("DEMO_SHIPPED")):
        hits = [i for i, line in enumerate(steps) if i >= position and f"slconvert {word}" in line]
        assert hits, f"`slconvert {word}` missing after step {position} of the demo: {steps}"
        position = hits[0] + 1
