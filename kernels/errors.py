"""Exceptions with one-line messages that name the problem and the fix.

They subclass ValueError so callers that already guard against bad values keep working, and the CLI
turns any `SuperlinearError` into a single line on stderr.
"""

__all__ = ["SuperlinearError", "SuperlinearConfigError", "SuperlinearInputError"]


class SuperlinearError(ValueError):
    """Base class of every error the kernels package raises on purpose."""


class SuperlinearConfigError(SuperlinearError):
    """A Superlinear parameter is outside its documented range."""


class SuperlinearInputError(SuperlinearError):
    """Tensors handed to the attention do not have the shapes, dtypes or masks the contract requires."""
