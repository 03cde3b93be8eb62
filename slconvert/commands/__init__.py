"""CLI commands, one module each; `COMMANDS` is what `slconvert.cli` registers."""

COMMANDS: list = []
