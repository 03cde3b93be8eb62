"""Which device a command or API call runs on: one parse and one check, before any weight is read.

`resolve_device` turns what the user typed (``--device cuda:1``, ``device="mps"``, a ``torch.device``, nothing)
into a ``torch.device`` that this machine has, or stops with one line naming the option, what is wrong and
what to pass instead. Every entry point that takes a device calls it first, so a typo or a GPU that is not
there is refused in a second, not after a model has been loaded.
"""

from __future__ import annotations

import torch

from .errors import SlconvertError

__all__ = ["resolve_device"]

_CHOICES = "cpu, cuda, cuda:N or mps"


def _named(what: str, value) -> str:
    """How the message names the value: `--device cuda` for an option, `device='cuda'` for a keyword."""
    return f"{what}{value!r}" if what.endswith("=") else f"{what} {value}"


def _use_cpu(what: str) -> str:
    return f"use {_named(what, 'cpu')}"


def resolve_device(device: str | torch.device | int | None = None, what: str = "--device") -> torch.device:
    """The torch device `device` names, checked against this machine.

    None, "" or "auto": the first CUDA GPU when one is visible, else the CPU. A string is parsed as torch
    parses it, case and spaces aside ("cpu", "cuda", "cuda:1", "mps"); an int is a CUDA GPU index. `what` names
    the option in the message (e.g. "--device", or "device=" for a Python keyword). Refused in one line
    (SlconvertError): a string that is no device, CUDA when no GPU is visible (or an index past the last one), MPS
    on a machine without it, the meta device (it holds no data), a backend this torch build does not have.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise SlconvertError(f"{_named(what, device)} is not a device ({type(device).__name__}); use {_CHOICES}")
    try:
        if isinstance(device, torch.device):
            dev = device
        elif isinstance(device, int):
            dev = torch.device("cuda", device)
        else:
            dev = torch.device(device.strip().lower())
    except (RuntimeError, ValueError, TypeError):
        raise SlconvertError(f"{_named(what, device)} is not a device; use {_CHOICES}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise SlconvertError(f"{_named(what, device)}: the meta device holds no weights; {_use_cpu(what)} or a GPU")
    if dev.type == "cuda":
        _check_cuda(dev, device, what)
        return dev
    if dev.type == "mps":
        _check_mps(dev, device, what)
        return dev
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if not callable(available):
        raise SlconvertError(f"{_named(what, device)}: this torch build ({torch.__version__}) has no {dev.type} "
                             f"backend; use {_CHOICES}")
    if not available():
        raise SlconvertError(f"{_named(what, device)}: no {dev.type} device is visible (torch {torch.__version__}); "
                             f"{_use_cpu(what)}")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise SlconvertError(f"{_named(what, device)}: only {count()} {dev.type} device(s) are visible "
                             f"({dev.type}:0..{dev.type}:{count() - 1})")
    return dev


def _check_cuda(dev: torch.device, device, what: str) -> None:
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise SlconvertError(f"{_named(what, device)}: no CUDA device is visible (torch {torch.__version__}, "
                             f"{build}); {_use_cpu(what)}")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        visible = "cuda:0" if count == 1 else f"cuda:0..cuda:{count - 1}"
        raise SlconvertError(f"{_named(what, device)}: only {count} CUDA device(s) are visible ({visible}); "
                             "pick one of them or set CUDA_VISIBLE_DEVICES")


def _check_mps(dev: torch.device, device, what: str) -> None:
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        built = mps is not None and mps.is_built()
        why = ("this machine has no Apple GPU or runs a macOS older than 12.3" if built
               else f"torch {torch.__version__} was built without it")
        raise SlconvertError(f"{_named(what, device)}: MPS is not available: {why}; {_use_cpu(what)}")
    if dev.index not in (None, 0):
        raise SlconvertError(f"{_named(what, device)}: there is one MPS device (mps or mps:0)")
