"""When a decode step is replayed from a CUDA graph (`slkernels.triton_ops.decode_graphs.replayed`): the key, the
capture on the second call of a static cache, eager calls for a growing cache, the bound on remembered keys and a
returned tensor of the caller's own. The graph is stood in for by `graph_standin`; tests/test_triton_interpret.py
runs the decode itself through it, tests/test_triton_gpu.py a real CUDA graph."""

from __future__ import annotations

import os

import pytest
import torch
from graph_standin import standin_capture
from slkernels.triton_ops import decode_graphs


@pytest.fixture
def graphs(monkeypatch):
    """GRAPH_DECODE on, a CPU stand-in for capture, an empty key store; returns the list of captures."""
    captures = []
    monkeypatch.setattr(decode_graphs, "GRAPH_DECODE", True)
    monkeypatch.setattr(decode_graphs, "_capture", standin_capture(captures))
    monkeypatch.setattr(decode_graphs, "_eager_only", lambda device: False)
    monkeypatch.setattr(decode_graphs, "_ENTRIES", type(decode_graphs._ENTRIES)())
    return captures


def _step(cache, calls):
    def fn(q, position):
        calls.append(1)
        return q * cache[position].sum()
    return fn


def test_a_static_cache_is_captured_on_its_second_call_and_replayed_after(graphs):
    cache, calls = torch.randn(10, 4), []
    fn = _step(cache, calls)
    results = []
    for i in range(5):
        q, position = torch.randn(3), torch.tensor(i)
        got = decode_graphs.replayed(fn, (cache,), (q, position), ("cfg", 0.5))
        assert torch.equal(got, q * cache[i].sum())
        results.append(got)
    assert len(graphs) == 1
    assert len(calls) == 1 + 1 + 4  # eager, the capture, a replay on each call from the second on
    assert len({r.data_ptr() for r in results}) == 5  # each call's tensor is its own, not the graph's buffer


def test_a_growing_cache_never_captures_and_the_store_is_bounded(graphs, monkeypatch):
    monkeypatch.setattr(decode_graphs, "MAX_GRAPHS", 3)
    calls = []
    for length in range(5, 12):
        cache = torch.randn(length, 4)  # a dynamic cache: a new tensor each step
        decode_graphs.replayed(_step(cache, calls), (cache,), (torch.randn(3), torch.tensor(0)), ("cfg", 0.5))
    assert graphs == [] and len(calls) == 7 and len(decode_graphs._ENTRIES) == 3


def test_settings_shapes_and_a_moved_cache_are_other_keys(graphs):
    cache, other, calls = torch.randn(10, 4), torch.randn(10, 4), []
    q, position = torch.randn(3), torch.tensor(2)
    for static, inputs, settings in (((cache,), (q, position), ("a", 1.0)), ((cache,), (q, position), ("a", 2.0)),
                                     ((cache,), (torch.randn(5), position), ("a", 1.0)),
                                     ((other,), (q, position), ("a", 1.0))):
        decode_graphs.replayed(_step(static[0], calls), static, inputs, settings)
    assert graphs == [] and len(decode_graphs._ENTRIES) == 4


def test_off_or_inside_a_capture_every_call_is_eager(graphs, monkeypatch):
    cache, calls = torch.randn(10, 4), []
    inputs = (torch.randn(3), torch.tensor(1))
    monkeypatch.setattr(decode_graphs, "_eager_only", lambda device: True)
    for _ in range(3):
        decode_graphs.replayed(_step(cache, calls), (cache,), inputs, ())
    monkeypatch.setattr(decode_graphs, "_eager_only", lambda device: False)
    monkeypatch.setattr(decode_graphs, "GRAPH_DECODE", False)
    for _ in range(3):
        decode_graphs.replayed(_step(cache, calls), (cache,), inputs, ())
    assert graphs == [] and len(calls) == 6 and not decode_graphs._ENTRIES


def test_cpu_tensors_are_never_captured():
    assert decode_graphs._eager_only(torch.device("cpu"))


def test_the_environment_turns_it_off_for_a_whole_process():
    """The replay is on by default; SLKERNELS_GRAPH_DECODE=0 turns it off from the start (e.g. to time or debug the
    launched step in a whole program), any other value leaves it on."""
    import subprocess
    import sys

    code = "from slkernels.triton_ops import decode_graphs; print(decode_graphs.GRAPH_DECODE)"
    for value, expected in (("1", "True"), ("0", "False"), (None, "True")):
        env = {k: v for k, v in os.environ.items() if k != "SLKERNELS_GRAPH_DECODE"}
        if value is not None:
            env["SLKERNELS_GRAPH_DECODE"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, (value, out.stderr[-500:])
