"""Converting tiny checkpoints through the real command line, shared by the tests."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from slconvert.cli import main
from slconvert.tiny import build_tiny_model

# W = 15: sequences of a few hundred tokens have most rows beyond the window, so search matters.
SMALL = ["--sw-index", "3", "--search-power", "0.5", "--span-power", "0.5"]


def convert_cli(source: Path, out: Path, *extra: str) -> Path:
    """`slconvert convert SOURCE OUT` with the SMALL settings; asserts success and returns OUT."""
    result = CliRunner().invoke(main, ["convert", str(source), str(out), *SMALL, "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return Path(out)


def tiny_pair(root: Path, *, seed: int = 0, model_type: str = "nemotron_h") -> tuple[Path, Path]:
    """A tiny random source checkpoint under ROOT/source and its conversion under ROOT/converted."""
    source = build_tiny_model(model_type, Path(root) / "source", seed=seed)
    return source, convert_cli(source, Path(root) / "converted")
