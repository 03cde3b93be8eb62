"""CLI commands, one module each; `COMMANDS` is what `slconvert.cli` registers."""

from .bench import bench
from .convert import convert_command
from .eval import eval_command
from .inspect import inspect_command
from .train import train_command

COMMANDS = [inspect_command, convert_command, train_command, eval_command, bench]
