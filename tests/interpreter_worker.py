"""Run a test file's `--worker` entry point in a child process and read back the JSON line it prints last.

TRITON_INTERPRET must be set before Triton is imported, so tests that compare interpreted kernels run their work
in a fresh process (the file itself, with `--worker`); tests that need a fresh import state for other reasons
(e.g. which modules a plain `import slconvert` registers) run the same way without the interpreter.

The longest workers (minutes each under the interpreter) are started in the background as soon as the suite is
collected (`start`, from conftest.py), so that they run beside the other tests on a machine with more than one
core; `interpreted_results` then waits for the started worker instead of running it again.

A worker under the interpreter imports this module (its file does, to define its tests), and the import makes the
interpreter's nested jit calls cheap (`cheap_device_calls`) in every such process, never in the pytest process.
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


def cheap_device_calls() -> None:
    """Make interpreted kernels' calls of other @triton.jit functions cost what the call itself costs.

    Triton's interpreter (3.6-3.9) re-patches every builtin of the language modules a called function sees on each
    call (`InterpretedFunction.__call__` runs `_patch_lang`, an `inspect.getmembers` over those modules): about half
    of an interpreted decode step's time. Patching the same modules again within one launch changes nothing, so
    inside a launch each function's modules (its globals) are patched on its first call only; a call outside a
    launch keeps Triton's own path. Without those names (another interpreter) nothing changes. Applied on import in
    interpreted processes (the end of this module)."""
    try:
        from triton.runtime import interpreter
        launch_call, device_call = interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__
        rewrite, patch, error = (interpreter.InterpretedFunction.rewrite, interpreter._patch_lang,
                                 interpreter.InterpreterError)
    except (ImportError, AttributeError):
        return
    patched: list[set] = []  # per launch in progress: ids of the globals whose modules are patched

    def launch(self, *args, **kwargs):
        patched.append(set())
        try:
            return launch_call(self, *args, **kwargs)
        finally:
            patched.pop()

    def call(self, *args, **kwargs):
        if not patched:
            return device_call(self, *args, **kwargs)
        if id(self.fn.__globals__) not in patched[-1]:
            patch(self.fn)
            patched[-1].add(id(self.fn.__globals__))
        try:
            return rewrite(self)(*args, **kwargs)
        except Exception as e:
            raise error(repr(e)) from e

    interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__ = launch, call


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


if os.environ.get("TRITON_INTERPRET") == "1":  # an interpreted worker (launched with it set): see the module doc
    cheap_device_calls()
