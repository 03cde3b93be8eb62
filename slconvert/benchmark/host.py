"""Where a benchmark ran: the device's name and the versions of the software it ran with.

The one home of these lines for the benchmarks (protocol.py, model.py, `slconvert bench`) and the scripts under
benchmarks/ and scripts/ that record or print them.
"""

from __future__ import annotations

import importlib
import platform

import torch

__all__ = ["device_name", "versions"]


def device_name(device: str | int | torch.device | None = None) -> str:
    """A CUDA device's model name (the current device when None); a CPU as its processor and thread count."""
    if device is None or isinstance(device, int) or torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions(*names: str) -> dict[str, str | None]:
    """name -> version, in the order given: "python" the interpreter's, "cuda" the CUDA that torch was built with,
    any other name the `__version__` of that module (None when it cannot be imported or has none)."""
    return {name: _version(name) for name in names}


def _version(name: str) -> str | None:
    if name == "python":
        return platform.python_version()
    if name == "cuda":
        return torch.version.cuda
    try:
        return importlib.import_module(name).__version__
    except Exception:  # noqa: BLE001 - an optional package that is missing or broken is recorded as None
        return None
