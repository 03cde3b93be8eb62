"""User-facing errors and the context manager that prints them as one line."""

from __future__ import annotations

import contextlib
import sys

from slkernels.errors import SuperlinearError

__all__ = ["SlconvertError", "friendly_errors", "one_line"]


class SlconvertError(Exception):
    """A problem with the user's input (path, checkpoint, recipe...) whose message says how to fix it."""


def one_line(err: BaseException, limit: int | None = None) -> str:
    """An exception as one line for a table or a log: its type, and the first line of its message (cut at
    `limit` characters)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit]}" if lines else type(err).__name__


@contextlib.contextmanager
def friendly_errors():
    try:
        yield
    except (SlconvertError, SuperlinearError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
