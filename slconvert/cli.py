"""The `slconvert` command line: one Click group, one module per command.

Errors the project raises on purpose (`SuperlinearError`, `SlconvertError`) and command-line mistakes (an unknown
option, a bad value) become one line on stderr and exit code 2, never a traceback. `slconvert` alone prints the
help, as `slconvert --help` does.
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


# Click 8.2+ raises it for a group called without a command (8.1 prints the help and exits 0 itself).
_NO_COMMAND = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _help_path(err: click.UsageError, group: click.Context | None) -> str:
    """The command whose help covers the mistake: the error's own context, else the subcommand being parsed (an
    option missing its value carries no context), else the group."""
    if err.ctx is not None:
        return err.ctx.command_path
    if group is not None and group.invoked_subcommand:
        return f"{group.command_path} {group.invoked_subcommand}"
    return group.command_path if group is not None else "slconvert"


@contextlib.contextmanager
def _usage_in_one_line(group: click.Context | None = None):
    try:
        yield
    except _NO_COMMAND as err:  # bare `slconvert`: the help, as `slconvert --help` prints it
        click.echo(err.ctx.get_help(), color=err.ctx.color)
        err.ctx.exit(0)
    except click.UsageError as err:
        where = _help_path(err, group)
        raise _OneLineError(f"{err.format_message().rstrip('.')} (see `{where} --help`)", err.exit_code) from None


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _usage_in_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        with friendly_errors(), _usage_in_one_line(ctx):
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
