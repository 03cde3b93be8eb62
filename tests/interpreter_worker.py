"""Run a test file's `--worker` entry point in a child process under the Triton interpreter.

TRITON_INTERPRET must be set before Triton is imported, so tests that compare interpreted kernels run their work
in a fresh process (the file itself, with `--worker`) and read back the JSON line it prints last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def interpreted_results(test_file: str, timeout: int = 1200) -> dict:
    """The JSON printed last by `python test_file --worker` run with TRITON_INTERPRET=1 from the tests folder."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    path = os.path.abspath(test_file)
    proc = subprocess.run([sys.executable, path, "--worker"], env=env, cwd=os.path.dirname(path),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
