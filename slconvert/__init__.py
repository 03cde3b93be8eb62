"""slconvert: turn hybrid long-context language models into Superlinear-attention models."""

from ._version import __version__
from .loading import load

__all__ = ["__version__", "load"]
