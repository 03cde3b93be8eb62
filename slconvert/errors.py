"""User-facing errors and the context manager that prints them as one line."""

from __future__ import annotations

import contextlib
import sys

from slkernels.errors import SuperlinearError

__all__ = ["SlconvertError", "friendly_errors", "one_line", "first_line"]


class SlconvertError(Exception):
    """A problem with the user's input (path, checkpoint, recipe...) whose message says how to fix it."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none): what a one-line error
    quotes of a library's own error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
        print(f"error: {first_line(err)}", file=sys.stderr)
        sys.exit(2)
