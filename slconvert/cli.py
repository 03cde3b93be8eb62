"""The `slconvert` command line: one Click group, one module per command.

Errors the project raises on purpose (`SuperlinearError`, `SlconvertError`) and command-line mistakes (an unknown
option, a bad value) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click

from ._version import __version__
from .errors import friendly_errors


def _terminate(signum, _frame) -> None:
    """SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C: partial outputs are removed on the way out."""
    raise SystemExit(128 + signum)


class _OneLineError(click.ClickException):
    """A command-line mistake shown as one `error:` line (with where to find the usage), like every other error,
    instead of Click's usage block."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@contextlib.contextmanager
def _usage_in_one_line():
    try:
        yield
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "slconvert"
        raise _OneLineError(f"{err.format_message().rstrip('.')} (see `{where} --help`)", err.exit_code) from None


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _usage_in_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        with friendly_errors(), _usage_in_one_line():
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
