"""slkernels: Superlinear attention kernels (PyTorch reference and Triton), one signature for all."""

from .api import available_backends, register_backend, superlinear_attention
from .config import SuperlinearConfig
from .errors import SuperlinearConfigError, SuperlinearError, SuperlinearInputError
from .geometry import window_length
from .selection import Selection, select_spans

__all__ = [
    "SuperlinearConfig",
    "SuperlinearError",
    "SuperlinearConfigError",
    "SuperlinearInputError",
    "superlinear_attention",
    "available_backends",
    "register_backend",
    "window_length",
    "select_spans",
    "Selection",
]
