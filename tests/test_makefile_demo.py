"""The demo's defaults in the Makefile: a window small enough that search matters, a runnable recipe chain."""

from __future__ import annotations

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


def test_demo_window_is_at_most_an_eighth_of_the_shortest_prompt():
    # DEMO_SETTINGS parsed exactly as `slconvert convert` parses them
    options = convert_command.make_context("convert", ["model", "out", *shlex.split(_make_variable("DEMO_SETTINGS"))])
    kwargs = dict(options.params)
    assert kwargs["keep_dense"] is None and kwargs["layers"] is None  # every attention layer is converted
    window = params_from(kwargs).window
    shortest = min(int(x) for x in _make_variable("DEMO_LENGTHS").split(","))
    assert shortest >= 8 * window, (shortest, window)


def test_demo_training_overrides_are_valid_recipe_keys():
    load_recipe(ROOT / "recipes" / "router-warmup.yaml", shlex.split(_make_variable("DEMO_WARMUP")))
    load_recipe(ROOT / "recipes" / "demo-curriculum.yaml", shlex.split(_make_variable("DEMO_CURRICULUM")))


def test_demo_dry_run_chains_convert_warmup_curriculum_and_evaluation():
    dry = subprocess.run(["make", "-n", "demo", "STAMP=Makefile"], capture_output=True, text=True, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr
    steps = [line for line in dry.stdout.splitlines() if "slconvert " in line]
    position = 0
    for word in ("inspect", "convert", "eval", "train recipes/router-warmup.yaml",
                 "train recipes/demo-curriculum.yaml", "eval"):
        hits = [i for i, line in enumerate(steps) if i >= position and f"slconvert {word}" in line]
        assert hits, f"`slconvert {word}` missing after step {position} of the demo: {steps}"
        position = hits[0] + 1
