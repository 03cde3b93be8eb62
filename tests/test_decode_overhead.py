"""Host side of the eager decode call: what one step costs on the host, whatever the device.

A decode step launches a few kernels over a long cache; called eagerly (as a generation loop calls it) its time
is the host work between the launches. These tests hold that work down on the CPU, with the kernels replaced by
recorders (the GPU code path, no device needed): over many steps on a growing cache nothing is read back to the
host, the geometry tables are built O(log n) times over n steps, and the decode itself allocates two buffers and
launches two kernels. A child process under ``TRITON_INTERPRET=1`` checks that the cached tables give the very
outputs (bit for bit) that tables built afresh for every call give.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from dispatch_ops import OpCounter
from interpreter_worker import interpreted_results
from slkernels import SuperlinearConfig, geometry, superlinear_attention
from slkernels.geometry import anchor_offset

SMALL = dict(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0)
class _Launches:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **meta)`` records the launch."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def __getitem__(self, grid):
        return lambda *args, **meta: self.log.append((self.name, grid))


@pytest.fixture
def stubbed(monkeypatch):
    """The decode path with its kernels recorded instead of run, its tables cache empty and its builds counted,
    as on a GPU (no interpreter: GPU launch sizes)."""
    from slkernels import triton_backend
    from slkernels.api import _BACKENDS
    from slkernels.triton_ops import decode, search

    launches, builds = [], []
    monkeypatch.setattr(decode, "interpreting", lambda: False)
    monkeypatch.setattr(search, "interpreting", lambda: False)
    for module, name in ((decode, "_decode_partial_kernel"), (decode, "_decode_combine_kernel"),
                         (search, "_search_kernel")):
        monkeypatch.setattr(module, name, _Launches(name, launches))
    monkeypatch.setitem(_BACKENDS, "triton", (triton_backend.triton_attention, lambda inp: True))
    monkeypatch.setattr(geometry, "_TABLES", {})
    build = geometry._build_tables

    def counted(config, capacity, device):
        builds.append(capacity)
        return build(config, capacity, device)

    monkeypatch.setattr(geometry, "_build_tables", counted)
    return launches, builds


def _step(batch, heads_q, heads_kv, len_kv, dim=16, rows=1):
    q = torch.randn(batch, heads_q, rows, dim)
    k = torch.randn(batch, heads_kv, 1, dim).expand(batch, heads_kv, len_kv, dim)  # only shapes are read
    return q, k


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_growing_cache_reads_nothing_back_and_builds_tables_log_n_times(stubbed, monkeypatch, search_key):
    """n one-token steps through the public call on a cache growing by one key per step: no host read-back in any
    step, three launches per step, and one table build per power-of-two capacity (O(log n), not n)."""
    launches, builds = stubbed
    cfg = SuperlinearConfig(**SMALL, search_key=search_key)
    if search_key == "span_mean":  # the running sums of the cache (their own kernels, rebuilt every step) left out
        from types import SimpleNamespace

        from slkernels.triton_ops import search

        sums = SimpleNamespace(pairs=torch.zeros(1), third=torch.zeros(1), scale=torch.zeros(1),
                               center=torch.zeros(1), norm=torch.zeros(1))
        monkeypatch.setattr(search, "key_prefix", lambda *args, **kw: sums)
    steps = 600
    ops = OpCounter()
    with torch.no_grad():
        for len_kv in range(1, steps + 1):
            q, k = _step(2, 4, 2, len_kv)
            with ops:
                superlinear_attention(q, k, k, q, cfg, backend="triton")
    assert ops.host_reads() == {}, ops.host_reads()
    per_step = Counter(name for name, _ in launches)
    assert per_step == {"_search_kernel": steps, "_decode_partial_kernel": steps, "_decode_combine_kernel": steps}
    assert sorted(builds) == sorted({geometry._bucket(t) for t in range(1, steps + 1)}), builds
    assert len(builds) <= math.log2(steps) + 1


def test_decode_rows_at_positions_read_nothing_back(stubbed):
    """A few rows at given positions with a padding start (the backend's arguments, as a model's cache hands
    them over), at 1M keys: no host read-back, and the tables are built once for all the steps."""
    from slkernels.triton_ops.decode import superlinear_decode

    launches, builds = stubbed
    cfg = SuperlinearConfig.released()
    s0 = torch.tensor([0, 37])
    ops = OpCounter()
    with torch.no_grad():
        for len_kv in range((1 << 20) + 1, (1 << 20) + 9):
            q, k = _step(2, 32, 2, len_kv, dim=128, rows=3)
            positions = torch.arange(len_kv - 3, len_kv)
            with ops:
                out = superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)
            assert out.shape == q.shape
    assert ops.host_reads() == {}, ops.host_reads()
    assert sorted(builds) == [1 << 21]  # 2^20 + 1 .. 2^20 + 8 share one capacity (2^21)
    assert len(launches) == 3 * 8


def test_decode_itself_allocates_two_buffers_and_launches_two_kernels(stubbed, monkeypatch):
    """Everything a step runs besides the search: two allocations (scratch and output), two launches, no other
    tensor operation, with the launch sizes of the tables (the chunks of the longest range at t = L_kv)."""
    from slkernels.triton_ops import decode

    launches, _ = stubbed
    cfg = SuperlinearConfig.released()
    len_kv, rows = 300_000, 2
    q, k = _step(1, 32, 2, len_kv, dim=128, rows=rows)
    anchors = torch.zeros(1, 32, rows, cfg.num_spans, dtype=torch.int32)
    scores = torch.zeros(1, 32, rows, cfg.num_spans)
    monkeypatch.setattr(decode, "search_topk", lambda *args, **kw: (anchors, scores))
    positions, s0 = torch.arange(len_kv - rows, len_kv), torch.zeros(1, dtype=torch.int64)
    decode.superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)  # warm-up: builds the tables
    launches.clear()
    ops = OpCounter()
    with ops:
        for _ in range(5):
            decode.superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)
    assert ops.ops == {"aten.empty.memory_format": 10}, ops.ops
    longest = int(geometry.span_tables(cfg, len_kv).back[len_kv] + geometry.span_tables(cfg, len_kv).fwd[len_kv]) + 1
    n_split = -(-longest // 512)
    assert launches[:2] == [("_decode_partial_kernel", (32 * rows * (cfg.num_spans + 1), n_split)),
                            ("_decode_combine_kernel", (32 * rows,))]


@pytest.mark.parametrize("cfg", [SuperlinearConfig(**SMALL), SuperlinearConfig.released(),
                                 SuperlinearConfig(sw_index=5, search_power=0.4, span_power=0.6)])
def test_cached_tables_equal_a_fresh_computation(cfg, monkeypatch):
    """Every table served from the cache (including across capacity edges) is the one computed afresh from the
    formulas, and a repeated call returns the same tensors (no work per call)."""
    monkeypatch.setattr(geometry, "_TABLES", {})
    from slkernels.triton_ops.entries import max_span_length

    for t in (1, 2, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 70_000):
        offsets = geometry.anchor_table(cfg, t)
        expected, i = [], cfg.sw_index + 1
        while anchor_offset(i, cfg.search_power) <= t:
            expected.append(anchor_offset(i, cfg.search_power))
            i += 1
        assert offsets.tolist() == expected, t
        assert geometry.anchor_table(cfg, t) is offsets
        spans = geometry.span_tables(cfg, t)
        grown = np.power(np.arange(t + 1, dtype=np.float64), cfg.span_power)
        np.testing.assert_array_equal(spans.back[: t + 1].numpy(), np.ceil(cfg.backward_factor * grown))
        np.testing.assert_array_equal(spans.fwd[: t + 1].numpy(), np.ceil(cfg.forward_factor * grown))
        assert spans.back.numel() == geometry._bucket(t) + 1 and geometry.span_tables(cfg, t) is spans
        tables = geometry.geometry_tables(cfg, t)
        assert tables.span_length(t) == max_span_length(cfg, t)
        assert tables.width == cfg.window and tables.capacity == geometry._bucket(t)


# ----------------------------------------------------------------------------------- interpreted, bit for bit

CASES = {  # name: (config, batch, heads_q, heads_kv, rows, cache lengths)
    "anchor": (SMALL, 2, 4, 2, 1, [61, 62, 63, 64, 65, 127, 128, 129]),
    "span_mean": (dict(SMALL, search_key="span_mean"), 2, 4, 1, 3, [61, 62, 63, 64, 65, 130]),
}


def _worker() -> None:
    """Child process: each case's decode steps on a growing cache with the tables cached, then the same steps
    with the cache emptied before every call; prints {case: {"identical": bool, "builds": int, "ref": error}}."""
    os.environ["TRITON_INTERPRET"] = "1"
    from slkernels import geometry as geo

    builds = []
    build = geo._build_tables
    geo._build_tables = lambda *a: builds.append(a[1]) or build(*a)
    results = {}
    for name, (cfg_kw, batch, heads_q, heads_kv, rows, lengths) in CASES.items():
        cfg = SuperlinearConfig(**cfg_kw)
        torch.manual_seed(len(name))
        steps = []
        for len_kv in lengths:
            q, qs = (torch.randn(batch, heads_q, rows, 16) for _ in range(2))
            k, v = (torch.randn(batch, heads_kv, len_kv, 16) for _ in range(2))
            mask = torch.ones(batch, len_kv, dtype=torch.long)
            mask[-1, :5] = 0
            steps.append((q, k, v, qs, mask))
        geo._TABLES = {}
        builds.clear()
        with torch.no_grad():
            cached = [superlinear_attention(*s[:4], cfg, attention_mask=s[4], backend="triton") for s in steps]
            n_builds = len(builds)
            fresh = []
            for s in steps:
                geo._TABLES = {}
                fresh.append(superlinear_attention(*s[:4], cfg, attention_mask=s[4], backend="triton"))
            refs = [superlinear_attention(*s[:4], cfg, attention_mask=s[4], backend="reference") for s in steps]
        results[name] = {
            "identical": all(torch.equal(a, b) for a, b in zip(cached, fresh)),
            "finite": all(bool(torch.isfinite(a).all()) for a in cached),
            "builds": n_builds,
            "capacities": len({geo._bucket(n) for n in lengths}),
            "ref": max(float((a - r).norm() / r.norm()) for a, r in zip(cached, refs)),
        }
    print(json.dumps(results))


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_results(__file__)


@pytest.mark.parametrize("name", list(CASES))
def test_cached_tables_give_the_outputs_of_a_fresh_build(interpreted, name):
    got = interpreted[name]
    assert got["identical"] and got["finite"], got
    assert got["builds"] == got["capacities"], got  # one build per capacity (per config and device)
    assert got["ref"] < 1e-4, got


if __name__ == "__main__" and "--worker" in sys.argv:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _worker()
