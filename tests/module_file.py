"""Import a Python file that is not in a package (the scripts under scripts/ and benchmarks/, a shipped task file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """The module in `path`, executed fresh under `name` (default: the file's stem)."""
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
