"""Run a test file's `--worker` entry point in a child process and read back the JSON line it prints last.

TRITON_INTERPRET must be set before Triton is imported, so tests that compare interpreted kernels run their work
in a fresh process (the file itself, with `--worker`); tests that need a fresh import state for other reasons
(e.g. which modules a plain `import slconvert` registers) run the same way without the interpreter.

The longest workers (minutes each under the interpreter) are started in the background as soon as the suite is
collected (`start`, from conftest.py), so that they run beside the other tests on a machine with more than one
core; `interpreted_results` then waits for the started worker instead of running it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

# Workers started in the background: (file, args, env, interpret) -> (process, stdout file, stderr file)
_STARTED: dict[tuple, tuple] = {}


def _launch(test_file: str, args: tuple, env: dict | None, interpret: bool) -> tuple[tuple, list[str], dict, str]:
    child_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    if interpret:
        child_env["TRITON_INTERPRET"] = "1"
    path = os.path.abspath(test_file)
    key = (path, tuple(args), tuple(sorted((env or {}).items())), interpret)
    return key, [sys.executable, path, "--worker", *args], child_env, os.path.dirname(path)


def start(test_file: str, *args: str, env: dict | None = None, interpret: bool = True) -> None:
    """Start the worker of `interpreted_results(test_file, *args, ...)` now, in the background."""
    key, command, child_env, cwd = _launch(test_file, args, env, interpret)
    if key not in _STARTED:
        out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
        _STARTED[key] = (subprocess.Popen(command, env=child_env, cwd=cwd, stdout=out, stderr=err, text=True), out, err)


def stop_all() -> None:
    """End the started workers that no test asked for (their tests were skipped or failed first)."""
    while _STARTED:
        process, out, err = _STARTED.popitem()[1]
        process.kill()
        process.wait()
        out.close()
        err.close()


def interpreted_results(test_file: str, *args: str, env: dict | None = None, interpret: bool = True,
                        timeout: int = 1200) -> dict:
    """The JSON printed last by `python test_file --worker ARGS` run from the tests folder, under TRITON_INTERPRET=1
    unless `interpret` is False, with `env` added to the environment (the worker started by `start`, if any)."""
    key, command, child_env, cwd = _launch(test_file, args, env, interpret)
    started = _STARTED.pop(key, None)
    if started is None:
        proc = subprocess.run(command, env=child_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        process, out, err = started
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        out.seek(0)
        err.seek(0)
        returncode, stdout, stderr = process.returncode, out.read(), err.read()
        out.close()
        err.close()
    assert returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])
