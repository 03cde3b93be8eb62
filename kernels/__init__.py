"""slkernels: Superlinear attention kernels (PyTorch reference and Triton), one signature for all.

Installed as `slkernels`. The source directory is named `kernels`, which is also an installed package of its own
(Hugging Face's, imported by transformers); when a checkout's root is on `sys.path` (`python -m ...` run from it),
`import kernels` would find this directory first. Imported under that bare name, this module hands the name over to
the installed package, so transformers gets the module it asked for; where that package is absent it stays an empty
module without a version (what transformers' probe reads as "not installed") and imports none of ours.
"""

if __name__ == "kernels":
    import importlib as _importlib
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _path = list(_sys.path)
    _self = _sys.modules.pop("kernels")
    _sys.path[:] = [p for p in _path if _os.path.abspath(p or _os.curdir) != _root]
    try:
        _sys.modules["kernels"] = _importlib.import_module("kernels")
    except ImportError:
        _sys.modules["kernels"] = _self
    finally:
        _sys.path[:] = _path
else:
    from .api import available_backends, register_backend, superlinear_attention
    from .config import SuperlinearConfig
    from .errors import SuperlinearConfigError, SuperlinearError, SuperlinearInputError
    from .geometry import window_length
    from .selection import Selection, select_spans
    from .state import LayerState

__all__ = [
    "SuperlinearConfig",
    "SuperlinearError",
    "SuperlinearConfigError",
    "SuperlinearInputError",
    "superlinear_attention",
    "LayerState",
    "available_backends",
    "register_backend",
    "window_length",
    "select_spans",
    "Selection",
]
