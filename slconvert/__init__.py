"""slconvert: turn hybrid long-context language models into Superlinear-attention models."""

from . import fast_mamba as _fast_mamba
from ._version import __version__
from .loading import load

# Mamba-2 layers on CUDA without mamba-ssm run fla-core's Triton kernels (SLCONVERT_FAST_MAMBA=0 turns it off).
_fast_mamba.install()

__all__ = ["__version__", "load"]
