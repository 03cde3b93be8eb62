"""Run a test file's `--worker` entry point in a child process and read back the JSON line it prints last.

TRITON_INTERPRET must be set before Triton is imported, so tests that compare interpreted kernels run their work
in a fresh process (the file itself, with `--worker`); tests that need a fresh import state for other reasons
(e.g. which modules a plain `import slconvert` registers) run the same way without the interpreter.

In a single pytest process the longest workers (minutes each under the interpreter) are started in the background
as soon as the suite is collected (`start`, from conftest.py), so that they run beside the other tests on a machine
with more than one core; `interpreted_results` then waits for the started worker instead of running it again.
Under pytest-xdist (`make test`) each worker runs where its file's tests run, and those files go first.

A worker under the interpreter imports this module (its file does, to define its tests), and the import makes the
interpreter's nested jit calls (`cheap_device_calls`) and its type bookkeeping (`cheap_types`) cheap in every such
process, never in the pytest process.
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


def cheap_types() -> None:
    """Make the interpreter's type bookkeeping cost a dictionary lookup where it recomputes a known answer.

    Under the interpreter every operation of every program goes through Triton's front end: each result builds a
    `block_type` and a tensor whose shapes are `triton.language.tuple`s of constexpr types, unwrapping constexprs on
    the way; `_get_np_dtype` builds a table of twenty entries per call. With Triton 3.9 these cut the
    two interpreted workers' time by about 37% (302 -> 189 s and 215 -> 135 s on one machine, the same JSON to the
    last digit). Each shortcut below returns what the original returns for the inputs it takes (the first
    construction of each block type and tensor shape runs the original, errors included) and hands every other
    input to the original. Where Triton's types hold other attributes than these shortcuts copy (another
    version), nothing is patched. Applied on import in interpreted processes (the end of this module)."""
    try:
        from triton.language import core
        from triton.runtime import interpreter
        block_type, constexpr, lang_tuple, scalar_type = core.block_type, core.constexpr, core.tuple, core.dtype
        np_dtype, unwrap = interpreter._get_np_dtype, core._unwrap_if_constexpr
        block_init, tensor_init = block_type.__init__, core.tensor.__init__
        sample = block_type(core.float32, [2, 4])
        if set(vars(sample)) != {"element_ty", "shape", "numel", "name"} or \
                set(vars(core.tensor(None, sample))) != {"handle", "shape", "numel", "type", "dtype"}:
            return
    except (ImportError, AttributeError, TypeError):
        return
    plain = (int, float, bool, str, type(None))

    def fast_unwrap(o):
        kind = type(o)
        if kind is constexpr:
            return o.value
        if kind in plain:
            return o
        return unwrap(o)

    np_dtypes: dict[str, object] = {}

    def fast_np_dtype(tt_dtype):
        scalar = tt_dtype.element_ty if type(tt_dtype) is block_type else tt_dtype
        if type(scalar) is not scalar_type:  # pointers and anything new: the original
            return np_dtype(tt_dtype)
        found = np_dtypes.get(scalar.name)
        if found is None:
            found = np_dtypes[scalar.name] = np_dtype(scalar)
        return found

    built: dict[tuple, tuple] = {}  # (element type's class and name, dims) -> (shape, numel, name)
    tensor_shapes: dict[tuple, tuple] = {}  # dims -> a tensor's (shape, numel) of that block shape

    def fast_block_init(self, element_ty, shape):
        values = shape.values if type(shape) is lang_tuple else shape
        dims = tuple(v.value if type(v) is constexpr else v for v in values) if type(values) in (list, tuple) else None
        if dims is None or any(type(d) is not int for d in dims):
            return block_init(self, element_ty, shape)
        key = (type(element_ty), element_ty.name, dims)
        found = built.get(key)
        if found is None:
            block_init(self, element_ty, shape)
            built[key] = (self.shape, self.numel, self.name)
        else:
            self.element_ty = element_ty
            self.shape, self.numel, self.name = found
        self._cheap_dims = dims

    def fast_tensor_init(self, handle, ty):
        dims = ty.__dict__.get("_cheap_dims") if type(ty) is block_type else None
        found = None if dims is None else tensor_shapes.get(dims)
        if found is None:
            tensor_init(self, handle, ty)
            if dims is not None:
                tensor_shapes[dims] = (self.shape, self.numel)
            return
        self.handle, self.type, self.dtype = handle, ty, ty.element_ty
        self.shape, self.numel = found

    core._unwrap_if_constexpr = fast_unwrap
    interpreter._get_np_dtype = fast_np_dtype
    block_type.__init__ = fast_block_init
    core.tensor.__init__ = fast_tensor_init


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
    cheap_types()
