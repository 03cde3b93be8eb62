"""Eager decode calls replayed from CUDA graphs, one graph per static cache.

Called eagerly (as transformers' `generate` calls a layer), a decode step costs the host far more than the GPU's
work: three Triton launches and their Python, 200-260 us per call on an H200's host for 48-58 us of kernels
(benchmarks/results/decode-host-h200-2026-12-01/). On a static cache (K and V preallocated at their capacity,
transformers' `StaticCache`) every step calls `superlinear_attention` with the same K and V tensors and the same
shapes; only the new rows' q and q_search and their positions change, and the kernels read positions on the device.
So the whole call (the input checks that need no read-back, the first real token of each row from the mask, the
kernels) is captured once and replayed: per call, one key lookup, one copy of the per-step tensors into the graph's
buffers (`torch._foreach_copy_` of their bytes: a single launch for all of them), one graph launch and a copy of the
output.

A call is keyed by the addresses, shapes and strides of K and V, the dtypes, devices, shapes and strides of the
per-step tensors (a None among them is part of the key), the settings (config, scale, backend), the stream and
whether inference mode is on. The first call of a key runs eagerly (it compiles the kernels and caches the geometry
tables, so the capture allocates nothing but its own buffers); the second captures; later ones replay, without the
public call's checks, which depend only on what the key holds (the checks that read values back, when asked for,
still run on every call). A cache that grows by one token per step (a dynamic cache) never repeats a key and never
captures: its calls run eagerly, at the cost of a key lookup. The graphs read K and V at the captured addresses,
which is right for any tensor found there later with the same shape and strides, since such a tensor is the one
passed in. At most MAX_GRAPHS keys are kept (the least recently used is dropped with its graph). Calls inside a
CUDA-graph capture or a torch.compile trace, calls that record gradients or take per-step tensors on another device
than q run eagerly; so does a key whose capture failed.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

__all__ = ["key_of", "captured", "replay", "replayed", "GRAPH_DECODE", "MAX_GRAPHS"]

# Replay eager decode calls from CUDA graphs on a static cache; off: every call launches its kernels. On an H200
# (benchmarks/results/decode-replay-h200-2026-12-01/) a replayed call gives the plain step's output to the bit and
# takes 38 / 54 / 129 us back to back at 16K / 64K / 1M keys (released) against 171 / 179 / 172 us launching the
# kernels and 33 / 47 / 122 us for the graph replay alone. On by default since the GPU tests of generation, decode
# and caches passed with it on (benchmarks/results/decode-pdl-h200-2026-12-01/). Turn it off here, or start the
# process with SLKERNELS_GRAPH_DECODE=0.
GRAPH_DECODE = os.environ.get("SLKERNELS_GRAPH_DECODE", "1") != "0"
# Keys remembered (each with its graph and static buffers once captured): several per layer of a model.
MAX_GRAPHS = 256


class _Entry:
    """A key seen once (graph None), captured (its graph, the static copies of the per-step tensors, its output),
    or never to be captured (`eager`: its capture failed)."""

    __slots__ = ("key", "graph", "buffers", "as_bytes", "out", "eager")

    def __init__(self, key: tuple):
        self.key, self.graph, self.buffers, self.as_bytes, self.out, self.eager = key, None, [], False, None, False


_ENTRIES: OrderedDict[tuple, _Entry] = OrderedDict()


def _capture(fn: Callable, inputs: tuple) -> tuple:
    """(graph, output) of `fn(*inputs)` captured on the device of the first input (a module function, so that a CPU
    test can stand in for the CUDA graph)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(inputs[0].device), torch.cuda.graph(graph):
        out = fn(*inputs)
    return graph, out


def _eager_only(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_current_stream_capturing()


# The current stream's handle without building a Stream object (a few microseconds less per call), where torch has it.
_RAW_STREAM = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    if _RAW_STREAM is not None:
        return _RAW_STREAM(device.index)
    return torch.cuda.current_stream(device).cuda_stream


def key_of(static: Sequence[torch.Tensor], inputs: Sequence, settings: tuple) -> tuple | None:
    """The key of a call that reads the `static` tensors (e.g. the cache's K and V) and the per-step `inputs`
    (tensors or None) with the hashable `settings`; None when such a call is never replayed: the replay is off,
    the call records gradients, runs inside a capture or a compile trace, or is not on a GPU, or an input is neither
    a tensor on the first input's device nor None. Costs no more than reading the tensors' metadata."""
    if not GRAPH_DECODE:
        return None
    first = inputs[0]
    if not isinstance(first, torch.Tensor):
        return None
    device = first.device
    if _eager_only(device):
        return None
    grad = torch.is_grad_enabled()
    # inference mode too: buffers cloned in it can only be written in it
    parts = [_stream(device), torch.is_inference_mode_enabled(), settings]
    for t in static:
        if not isinstance(t, torch.Tensor) or (grad and t.requires_grad):
            return None
        parts.append((t.data_ptr(), t.dtype, t.shape, t.stride()))
    for t in inputs:
        if t is None:
            parts.append(None)
            continue
        if not isinstance(t, torch.Tensor) or t.device != device or (grad and t.requires_grad):
            return None
        parts.append((t.dtype, t.shape, t.stride()))
    return tuple(parts)


def captured(key: tuple) -> _Entry | None:
    """The captured entry of `key`, or None (a key not seen, seen once, or never captured)."""
    entry = _ENTRIES.get(key)
    return entry if entry is not None and entry.graph is not None else None


def replay(entry: _Entry, inputs: Sequence) -> torch.Tensor:
    """The captured call on new per-step `inputs` (those of its key): copied into the graph's buffers, replayed, the
    output copied into a tensor of the caller's own."""
    _ENTRIES.move_to_end(entry.key)
    if entry.as_bytes:
        torch._foreach_copy_(entry.buffers, [t.view(torch.uint8) for t in inputs if t is not None])
    elif entry.buffers:
        torch._foreach_copy_(entry.buffers, [t for t in inputs if t is not None])
    entry.graph.replay()
    return entry.out.clone()


def _viewable_as_bytes(t: torch.Tensor) -> bool:
    return t.dim() > 0 and t.stride(-1) == 1


def _copy_targets(statics: list) -> tuple[list, bool]:
    """The buffers `replay` copies the per-step tensors into, and whether as bytes: a copy of tensors of several
    dtypes is one launch per dtype, so where every tensor's last dim is contiguous all are copied as raw bytes (uint8
    views, exact for any dtype) in one launch; on an H200's host each launch saved is about 10 us of a step's 40-60."""
    tensors = [t for t in statics if t is not None]
    if all(_viewable_as_bytes(t) for t in tensors):
        return [t.view(torch.uint8) for t in tensors], True
    return tensors, False


def replayed(fn: Callable, key: tuple, inputs: Sequence) -> torch.Tensor:
    """`fn(*inputs)` for a call of `key` (from `key_of`) not captured yet: run eagerly on the key's first call, captured
    on its second and replayed (later calls go to `captured` and `replay`). `fn` must read nothing per step but
    `inputs` (None entries stay None) and tensors that `key` names by address."""
    entry = _ENTRIES.get(key)
    if entry is None:  # first call of this key: eager (compiles the kernels, caches the tables)
        _ENTRIES[key] = _Entry(key)
        while len(_ENTRIES) > MAX_GRAPHS:
            _ENTRIES.popitem(last=False)
        return fn(*inputs)
    _ENTRIES.move_to_end(key)
    if entry.eager:
        return fn(*inputs)
    if entry.graph is None:  # the same static tensors again: capture
        statics = [None if t is None else t.clone() for t in inputs]
        try:
            entry.graph, entry.out = _capture(fn, tuple(statics))
        except Exception as err:  # a call that cannot be captured (an operation a graph may not hold)
            entry.graph, entry.eager = None, True
            warnings.warn(f"a decode call could not be captured in a CUDA graph ({type(err).__name__}: {err}); calls "
                          "with its inputs run eagerly from now on", stacklevel=3)
            return fn(*inputs)
        entry.buffers, entry.as_bytes = _copy_targets(statics)
    return replay(entry, inputs)

