"""Eager decode steps replayed from CUDA graphs, one graph per static cache.

Called eagerly (as transformers' `generate` calls a layer), a decode step costs the host far more than the GPU's
work: three Triton launches and their Python, 200-260 us per call on an H200's host for 48-58 us of kernels
(benchmarks/results/decode-host-h200-2026-12-01/). On a static cache (K and V preallocated at their capacity,
transformers' `StaticCache`) every step calls the kernels with the same K and V tensors and the same shapes; only the
new rows' q and q_search and their positions change, and the kernels read positions on the device. So the step is
captured once and replayed: per call, four small copies in, one graph launch and a copy of the output, instead of
three Triton launches and their Python.

A call is keyed by the addresses, shapes and strides of K and V, the shapes of the per-step inputs, the config, the
scale and the stream. The first call of a key runs eagerly (it compiles the kernels and caches the geometry tables,
so the capture allocates nothing but its own buffers); the second captures; later ones replay. A cache that grows by
one token per step (a dynamic cache) never repeats a key and never captures: its calls run eagerly, at the cost of a
key lookup. The graphs read K and V at the captured addresses, which is right for any tensor found there later with
the same shape and strides, since such a tensor is the one passed in. At most MAX_GRAPHS keys are kept (the least
recently used is dropped with its graph). Calls inside a CUDA-graph capture or a torch.compile trace run eagerly.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch

__all__ = ["replayed", "GRAPH_DECODE", "MAX_GRAPHS"]

# Replay eager decode steps from CUDA graphs on a static cache; off: every step launches its kernels. On an H200
# (benchmarks/results/decode-graphs-h200-2026-12-01/) replaying gave the plain step's output to the bit and cut the
# eager step from 236 / 331 / 299 us to 176 / 166 / 219 us at 16K / 64K / 1M keys (synchronised after each call).
# On by default since the GPU tests of generation, decode and caches passed with it on
# (benchmarks/results/decode-pdl-h200-2026-12-01/). Turn it off here, or start the process with
# SLKERNELS_GRAPH_DECODE=0.
GRAPH_DECODE = os.environ.get("SLKERNELS_GRAPH_DECODE", "1") != "0"
# Keys remembered (each with its graph and static buffers once captured): several per layer of a model.
MAX_GRAPHS = 256


class _Entry:
    """A key seen once (graph None) or captured: its graph, the static copies of the per-step inputs, its output."""

    __slots__ = ("graph", "inputs", "out")

    def __init__(self):
        self.graph, self.inputs, self.out = None, (), None


_ENTRIES: OrderedDict[tuple, _Entry] = OrderedDict()


def _capture(fn, inputs: tuple) -> tuple:
    """(graph, output) of `fn(*inputs)` captured on the current device (a module function, so that a CPU test can
    stand in for the CUDA graph)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*inputs)
    return graph, out


def _eager_only(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_current_stream_capturing()


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def replayed(fn, static: tuple, inputs: tuple, settings: tuple) -> torch.Tensor:
    """`fn(*inputs)`, replayed from a graph captured on an earlier call with the same `static` tensors (read by `fn`,
    e.g. the cache's K and V), per-step `inputs` of the same shapes and the same hashable `settings` (the config,
    the scale). Returns a tensor of its own (the graph's output copied), as `fn` would."""
    device = inputs[0].device
    if not GRAPH_DECODE or _eager_only(device):
        return fn(*inputs)
    key = (_stream(device), settings,
           *((t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) for t in static),
           *((t.device, t.dtype, tuple(t.shape), t.stride()) for t in inputs))
    entry = _ENTRIES.get(key)
    if entry is None:  # first call of this key: eager (compiles the kernels, caches the tables)
        _ENTRIES[key] = _Entry()
        while len(_ENTRIES) > MAX_GRAPHS:
            _ENTRIES.popitem(last=False)
        return fn(*inputs)
    _ENTRIES.move_to_end(key)
    if entry.graph is None:  # the same static tensors again: capture
        entry.inputs = tuple(t.clone() for t in inputs)
        entry.graph, entry.out = _capture(fn, entry.inputs)
    for buffer, t in zip(entry.inputs, inputs):
        buffer.copy_(t)
    entry.graph.replay()
    return entry.out.clone()
