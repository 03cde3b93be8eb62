"""The one public entry point, `superlinear_attention`, and its backend registry.

Every backend takes the same checked `AttentionInputs` and returns [B, H_q, L_q, D] in q's dtype, so a
backend is a drop-in replacement for the reference and is tested against it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from . import decode_graphs
from .config import SuperlinearConfig
from .errors import SuperlinearInputError
from .inputs import AttentionInputs, check_inputs, read_back_checks
from .reference import reference_attention
from .state import LayerState

__all__ = ["superlinear_attention", "register_backend", "available_backends", "resolve_backend"]

Backend = Callable[[AttentionInputs], torch.Tensor]
# name -> (function, predicate telling whether it can serve these inputs)
_BACKENDS: dict[str, tuple[Backend, Callable[[AttentionInputs], bool]]] = {
    "reference": (reference_attention, lambda inp: True),
}
# Preference order of backend="auto".
_AUTO_ORDER: list[str] = []
# name -> predicate telling whether the backend's call on these inputs may be captured in a CUDA graph and replayed
# (`decode_graphs`): it reads no value back to the host and reads nothing per call but the inputs.
_REPLAYABLE: dict[str, Callable[[AttentionInputs], bool]] = {}
# Registrations so far: part of a replayed call's key, so that a new backend is never bypassed by an older graph.
_REGISTRATIONS = 0


def register_backend(name: str, fn: Backend, supports: Callable[[AttentionInputs], bool], *, auto: bool = True,
                     replayable: Callable[[AttentionInputs], bool] | None = None) -> None:
    """Add a backend; with auto=True it is preferred over the reference when `supports(inputs)` holds. With
    `replayable`, its calls for which `replayable(inputs)` holds are replayed from CUDA graphs on a static cache
    (`decode_graphs`)."""
    global _REGISTRATIONS
    _BACKENDS[name] = (fn, supports)
    _REPLAYABLE.pop(name, None)
    if replayable is not None:
        _REPLAYABLE[name] = replayable
    _REGISTRATIONS += 1
    if auto and name not in _AUTO_ORDER:
        _AUTO_ORDER.append(name)


def available_backends() -> list[str]:
    _load_optional_backends()
    return sorted(_BACKENDS)


def superlinear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_search: torch.Tensor,
    config: SuperlinearConfig,
    *,
    cache_position: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
    check_values: bool = True,
    state: LayerState | None = None,
) -> torch.Tensor:
    """Superlinear attention of `q` over `k`/`v`, routed by `q_search` (docs/semantics.md states the semantics).

    q, q_search: [B, H_q, L_q, D]; k, v: [B, H_kv, L_kv, D] with H_q % H_kv == 0 (GQA, never repeated).
    cache_position: [L_q] absolute key-axis position of each query row (default: the last L_q positions),
    so a whole prefill, a prefill chunk and a decode step are the same call.
    attention_mask: [B, L_kv], 1 for real tokens, left padding only.
    scale: token-attention softmax scale (default 1/sqrt(D)); router scores are never scaled.
    backend: "auto" (fastest available), "reference", or a registered kernel backend such as "triton".
    check_values: False skips the checks that read values back to the host (cache_position within the key axis,
    left padding only), for callers that guarantee both; shapes and types are always checked.
    state: a `LayerState` passed to every call of one layer, in which a backend keeps what the next call can reuse
    (the Triton backend: the running sums of the span-mean key's decode steps, checked against the keys on every
    call); None builds everything per call.
    Returns [B, H_q, L_q, D] in q's dtype.

    A decode call on a static cache (the same k and v tensors again, new rows of the same shapes) is replayed from a
    CUDA graph from its second call on, where the backend allows it (`decode_graphs`; SLKERNELS_GRAPH_DECODE=0
    turns it off): the checks that depend only on shapes ran on its first call and are skipped.
    """
    step = (q, q_search, cache_position, attention_mask)
    # the state's arrays, named by address like K and V: a graph replayed for this key reads and writes the arrays
    # found there, which are then the state's own
    held = state.held() if isinstance(state, LayerState) else ()
    key = _replay_key(k, v, held, step, config, scale, backend, state)
    if key is not None:
        entry = decode_graphs.captured(key)
        if entry is not None:
            if check_values:
                read_back_checks(cache_position, attention_mask, k.shape[2])
            return decode_graphs.replay(entry, step)
    inputs = check_inputs(q, k, v, q_search, config, cache_position, attention_mask, scale, check_values, state)
    if q.numel() == 0:  # no batch row, query head or query row: nothing to attend, for every backend alike
        return _no_rows(inputs)
    name = resolve_backend(inputs, backend)
    if key is not None and name in _REPLAYABLE and _REPLAYABLE[name](inputs):
        def call(q_step, q_search_step, positions, mask):  # what a replay of this key runs
            return _run(name, check_inputs(q_step, k, v, q_search_step, config, positions, mask, scale, False, state))

        return decode_graphs.replayed(call, key, step)
    return _run(name, inputs)


def _replay_key(k, v, held: tuple, step: tuple, config, scale, backend: str, state) -> tuple | None:
    """The `decode_graphs` key of a call, or None where the call is never replayed (off, not on a GPU, recording
    gradients, inside a capture or a compile trace, arguments of kinds the checks refuse or convert, or a state that
    would make its arrays in this call). `held`: the state's arrays, named by address like K and V."""
    if not isinstance(config, SuperlinearConfig):
        return None
    if state is not None and (not isinstance(state, LayerState) or state.allocates(config, k)):
        return None
    if scale is not None and type(scale) not in (int, float):
        return None
    _load_optional_backends()  # the first call registers the kernels before its key is taken
    return decode_graphs.key_of((k, v, *held), step, (config, scale, backend, _REGISTRATIONS, state is None))


def _no_rows(inputs: AttentionInputs) -> torch.Tensor:
    """The empty output of a call without query rows, tied to the inputs so that a backward through it runs (and
    gives their empty or zero gradients)."""
    batch, heads_q, len_q, _ = inputs.q.shape
    tied = sum(t.sum() for t in (inputs.q, inputs.k, inputs.v, inputs.q_search)) * 0
    return inputs.q.new_zeros(batch, heads_q, len_q, inputs.v.shape[-1]) + tied.to(inputs.q.dtype)


def _run(name: str, inputs: AttentionInputs) -> torch.Tensor:
    # Backends pick their own precision; an enclosing autocast (mixed-precision training) must not
    # silently turn their float32 score and softmax math into bfloat16. (Entering the context costs host time
    # on every decode step, so it is entered only when autocast is on.)
    if torch.is_autocast_enabled(inputs.q.device.type):
        with torch.autocast(inputs.q.device.type, enabled=False):
            return _BACKENDS[name][0](inputs)
    return _BACKENDS[name][0](inputs)


def resolve_backend(inputs: AttentionInputs, backend: str = "auto") -> str:
    """The name of the backend that serves these inputs: the first registered one that supports them for
    "auto", else the named one after checking that it exists and supports them."""
    _load_optional_backends()
    if backend == "auto":
        for name in _AUTO_ORDER:
            if _BACKENDS[name][1](inputs):
                return name
        if inputs.q.is_cuda:
            _warn_reference_fallback(inputs)
        return "reference"
    if backend not in _BACKENDS:
        raise SuperlinearInputError(
            f"unknown backend {backend!r}; choose one of {['auto', *available_backends()]}"
        )
    if not _BACKENDS[backend][1](inputs):
        raise SuperlinearInputError(
            f"backend {backend!r} cannot run these inputs (device {inputs.q.device}, dtype {inputs.q.dtype}, "
            f"head dim {_head_dims(inputs)}); use backend='reference' or 'auto'"
        )
    return backend


def _head_dims(inputs: AttentionInputs) -> str:
    """``128``, or ``128 (v 64)`` where the values' head dim is another: a backend may serve one and not the other."""
    dim, dim_v = inputs.q.shape[-1], inputs.v.shape[-1]
    return f"{dim}" if dim_v == dim else f"{dim} (v {dim_v})"


_WARNED: set = set()


def _warn_reference_fallback(inputs: AttentionInputs) -> None:
    """Say once per reason that a CUDA call runs on the (correct, much slower) PyTorch reference."""
    reason = (str(inputs.q.dtype), _head_dims(inputs), tuple(_AUTO_ORDER))
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    kernels = ", ".join(_AUTO_ORDER) or f"none: the Triton backend did not import ({_IMPORT_ERROR})"
    warnings.warn(f"superlinear_attention runs on the PyTorch reference on {inputs.q.device}: no kernel backend "
                  f"({kernels}) serves dtype {inputs.q.dtype} with head dim {_head_dims(inputs)}; it is exact but "
                  "much slower than the kernels", stacklevel=4)


_LOADED = False
_IMPORT_ERROR: str | None = None  # why the Triton backend did not import, named by the fallback warning


def _load_optional_backends() -> None:
    """Import kernel backends lazily, and register them: they pull in Triton, which the reference never needs."""
    global _LOADED, _IMPORT_ERROR
    if _LOADED:
        return
    _LOADED = True
    try:
        from . import triton_backend
    except ImportError as err:
        _IMPORT_ERROR = f"{type(err).__name__}: {err}"
        return
    if "triton" not in _BACKENDS:  # a backend the caller registered under that name first stays
        register_backend("triton", triton_backend.triton_attention, triton_backend.supports,
                         replayable=triton_backend.decodes)
