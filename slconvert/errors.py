"""User-facing errors and the context manager that prints them as one line."""

from __future__ import annotations

import contextlib
import sys

from slkernels.errors import SuperlinearError

__all__ = ["SlconvertError", "friendly_errors"]


class SlconvertError(Exception):
    """A problem with the user's input (path, checkpoint, recipe...) whose message says how to fix it."""


@contextlib.contextmanager
def friendly_errors():
    try:
        yield
    except (SlconvertError, SuperlinearError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
