"""Checkpoints shipped with the package: the tiny hybrid teacher used by `make demo`.

`TINY_TEACHER` is a plain checkpoint directory (config.json, safetensors, tokenizer, generation config,
its training log and model card); load it by path like any other checkpoint.
`slconvert.assets.teacher.build_untrained_teacher` writes the randomly initialized starting point that
`recipes/tiny-teacher.yaml` trains into it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TINY_TEACHER"]

TINY_TEACHER = Path(__file__).resolve().parent / "tiny-teacher"
