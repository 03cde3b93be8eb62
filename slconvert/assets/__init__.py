"""Checkpoints shipped with the package: the tiny hybrid teacher used by `make demo`, and its conversion.

`TINY_TEACHER` is a plain checkpoint directory (config.json, safetensors, tokenizer, generation config,
its training log and model card); load it by path like any other checkpoint.
`slconvert.assets.teacher.build_untrained_teacher` writes the randomly initialized starting point that
`recipes/tiny-teacher.yaml` trains into it. `TINY_CONVERTED` is the teacher converted with the demo's
settings (p = 0.5, W = 15, span-mean search key) and trained on a GPU by `recipes/conversion-study.yaml`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TINY_TEACHER", "TINY_CONVERTED"]

TINY_TEACHER = Path(__file__).resolve().parent / "tiny-teacher"
TINY_CONVERTED = Path(__file__).resolve().parent / "tiny-converted"
