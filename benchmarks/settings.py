"""The benchmark scripts' ``--set "NAME=VALUE; NAME=VALUE"``: module-level settings of a kernel module (e.g.
`slkernels.triton_ops.decode.SPAN_DOT`), each VALUE a Python literal, checked once here and set for as long as a
``with overridden(...)`` block runs."""

from __future__ import annotations

import ast
import contextlib
from types import ModuleType
from unittest import mock


def parse(module: ModuleType, item: str) -> list[tuple[str, object]]:
    """The (name, value) pairs of one ``--set`` item; a name the module does not define, or a value that is not a
    literal, exits with one line naming it."""
    pairs = []
    for part in item.split(";"):
        name, _, value = part.strip().partition("=")
        if not name.isupper() or not hasattr(module, name):
            raise SystemExit(f"error: --set {item}: {module.__name__} has no setting {name!r}")
        try:
            pairs.append((name, ast.literal_eval(value)))
        except (ValueError, SyntaxError):
            raise SystemExit(f"error: --set {item}: the value must be a Python literal, e.g. {name}=(64, 16, 1)"
                             ) from None
    return pairs


@contextlib.contextmanager
def overridden(module: ModuleType, pairs: list[tuple[str, object]]):
    """The module's settings set to `pairs` inside the block, restored after it."""
    with contextlib.ExitStack() as stack:
        for name, value in pairs:
            stack.enter_context(mock.patch.object(module, name, value))
        yield
