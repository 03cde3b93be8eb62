"""The `slconvert` command line: one Click group, one module per command.

Errors the project raises on purpose (`SuperlinearError`, `SlconvertError`) become one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from ._version import __version__
from .errors import friendly_errors


def _terminate(signum, _frame) -> None:
    """SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C: partial outputs are removed on the way out."""
    raise SystemExit(128 + signum)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        with friendly_errors():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slconvert")
def main() -> None:
    """Convert hybrid long-context models to Superlinear attention, train, evaluate and benchmark them."""


def _register_commands() -> None:
    from .commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
