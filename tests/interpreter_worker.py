"""Run a test file's `--worker` entry point in a child process and read back the JSON line it prints last.

TRITON_INTERPRET must be set before Triton is imported, so tests that compare interpreted kernels run their work
in a fresh process (the file itself, with `--worker`); tests that need a fresh import state for other reasons
(e.g. which modules a plain `import slconvert` registers) run the same way without the interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def interpreted_results(test_file: str, *args: str, env: dict | None = None, interpret: bool = True,
                        timeout: int = 1200) -> dict:
    """The JSON printed last by `python test_file --worker ARGS` run from the tests folder, under TRITON_INTERPRET=1
    unless `interpret` is False, with `env` added to the environment."""
    child_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    if interpret:
        child_env["TRITON_INTERPRET"] = "1"
    path = os.path.abspath(test_file)
    proc = subprocess.run([sys.executable, path, "--worker", *args], env=child_env, cwd=os.path.dirname(path),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
