"""slconvert: turn hybrid long-context language models into Superlinear-attention models."""

from ._version import __version__

__all__ = ["__version__"]
