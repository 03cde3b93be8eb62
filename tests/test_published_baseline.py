"""The published-kernel baseline of `slconvert bench` on the CPU: a stand-in `superlinear` package in sys.modules,
timings and slkernels replaced by fakes, so that the rows, the skipped paths and the reports can be checked
without a GPU."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from slconvert.benchmark import BenchSettings, protocol, published, run_benchmark
from slconvert.benchmark.report import format_table, plot_times, write_json
from slconvert.benchmark.timing import Measurement

GENERIC_MS, BUCKETED_MS, SLKERNELS_MS, DENSE_MS = 60.0, 9.0, 2.0, 5.0


class Clock:
    """What the fake kernels report as their time: each call sets the next measurement."""

    def __init__(self):
        self.ms = None
        self.calls: list[tuple[str, dict]] = []
        self.queued: list[int] = []  # `queued` of each measurement

    def measure(self, fn, budget_ms=0.0, max_reps=20, warmup=1, queued=0):
        self.queued.append(queued)
        self.ms = None
        fn()
        ms = DENSE_MS if self.ms is None else self.ms
        return Measurement(ms, [ms], 0, 0)


def _install_package(monkeypatch, clock: Clock, paths=("generic", "bucketed"), failing=()):
    """A stand-in superlinear package whose prefill functions have the published signature."""

    def make(path, ms, scale):
        def fn(Q1, Q2, K, V, cache_pos=None, attention_mask=None, sw_index=0, num_spans=3, block_k=64,
               search_block_q=128, backward_factor=2.0, forward_factor=0.0, span_power=0.5, search_power=None,
               inv_search_power_int=2, *, cache_position=None, topk=None):
            clock.calls.append((path, {"Q1": Q1, "Q2": Q2, "keys": K.shape[2], "cache_position": cache_position,
                                       "sw_index": sw_index, "num_spans": num_spans, "backward_factor": backward_factor,
                                       "forward_factor": forward_factor, "span_power": span_power,
                                       "search_power": search_power}))
            if path in failing:
                raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB\nmore detail")
            clock.ms = ms
            return Q2 * scale

        return fn

    attention = types.ModuleType(published.MODULE)
    if "generic" in paths:
        attention.prefill_gqa = make("generic", GENERIC_MS, 1.0)
    if "bucketed" in paths:
        attention.fused_prefill_with_swtriton_bucketed_gqa = make("bucketed", BUCKETED_MS, 1.01)
    root = types.ModuleType("superlinear")
    root.__version__ = "0.0.test"
    parts = published.MODULE.split(".")
    for i in range(1, len(parts)):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), root if i == 1 else types.ModuleType(".".join(parts[:i])))
    monkeypatch.setitem(sys.modules, published.MODULE, attention)


@pytest.fixture
def cpu_bench(monkeypatch):
    """The protocol on the CPU: small float32 inputs, slkernels and timings faked, a named device."""
    clock = Clock()

    def inputs(cfg, length, q_rows=None, grad=False):
        g = torch.Generator().manual_seed(length)
        rows = length if q_rows is None else q_rows
        make = lambda heads, n: torch.randn(1, heads, n, cfg.head_dim, generator=g, requires_grad=grad)  # noqa: E731
        return make(cfg.heads_q, rows), make(cfg.heads_kv, length), make(cfg.heads_kv, length), make(cfg.heads_q, rows)

    def slkernels(q, k, v, qs, config, cache_position=None, backend=None):
        clock.ms = SLKERNELS_MS
        return q.clone()

    monkeypatch.setattr(protocol, "_inputs", inputs)
    monkeypatch.setattr(protocol, "attended_keys", lambda *a, **kw: 100)
    monkeypatch.setattr(protocol, "superlinear_attention", slkernels)
    monkeypatch.setattr(protocol, "measure", clock.measure)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    return clock


def _settings(**kw):
    base = dict(lengths=[64], settings=["released"], passes=["forward"], million=False, heads_q=4, heads_kv=2,
                head_dim=8, dtype="float32", chunk=32)
    return BenchSettings(**(base | kw))


def test_both_paths_are_timed_in_their_own_rows(cpu_bench, monkeypatch, tmp_path):
    _install_package(monkeypatch, cpu_bench)
    partial = []
    result = run_benchmark(_settings(), partial_result=partial.append)
    rows = result["rows"]
    # the result after each step is marked incomplete, the last one complete
    assert [p["complete"] for p in partial] == [False] and result["complete"] is True
    # dense SDPA and slkernels also time queued calls, the published paths one call at a time
    assert cpu_bench.queued == [20, 20, 0, 0]
    assert [r["setting"] for r in rows] == ["released", "published generic released", "published bucketed released"]
    generic, bucketed = rows[1], rows[2]
    assert (generic["published_path"], generic["published_function"]) == ("generic", "prefill_gqa")
    assert (bucketed["published_path"], bucketed["published_function"]) == (
        "bucketed", "fused_prefill_with_swtriton_bucketed_gqa")
    assert generic["published_setting"] == bucketed["published_setting"] == "released"
    assert (generic["superlinear_ms"], bucketed["superlinear_ms"]) == (GENERIC_MS, BUCKETED_MS)
    assert generic["speedup"] == pytest.approx(DENSE_MS / GENERIC_MS)
    assert generic["relative_difference_vs_slkernels"] == pytest.approx(0.0, abs=1e-12)
    assert bucketed["relative_difference_vs_slkernels"] == pytest.approx(0.01, rel=1e-4)  # float32 inputs

    # the released setting reaches both paths the same way: search queries first, positions, spans
    config = protocol.SETTINGS["released"]()
    for path in ("generic", "bucketed"):
        call = next(kw for p, kw in cpu_bench.calls if p == path)
        assert torch.equal(call["cache_position"], torch.arange(64))
        assert (call["sw_index"], call["num_spans"], call["backward_factor"], call["forward_factor"],
                call["span_power"], call["search_power"]) == (
            config.sw_index, config.num_spans, config.backward_factor, config.forward_factor, config.span_power,
            config.search_power)
        assert call["Q1"] is not call["Q2"]

    info = result["environment"]["published_kernels"]
    assert info["installed"] and info["skipped"] == {}
    assert info["paths"] == {"generic": "prefill_gqa", "bucketed": "fused_prefill_with_swtriton_bucketed_gqa"}
    [fastest] = result["published_fastest"]
    assert (fastest["setting"], fastest["pass"], fastest["length"], fastest["path"]) == (
        "released", "forward", 64, "bucketed")
    assert fastest["ms_by_path"] == {"generic": GENERIC_MS, "bucketed": BUCKETED_MS}
    assert fastest["slkernels_times_faster"] == pytest.approx(BUCKETED_MS / SLKERNELS_MS)

    table = format_table(result)
    header, *lines = table.splitlines()[1:4]
    assert {len(line) for line in lines} == {len(header)}  # columns aligned: labels padded, "-" where no value
    assert "published bucketed released at 64: output differs from slkernels by 0.01" in table
    assert ("published released forward at 64: faster path bucketed, 9.0 ms (generic 60.0 ms); "
            "slkernels 2.0 ms, 4.5x faster") in table
    write_json(result, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["published_fastest"][0]["path"] == "bucketed"
    plot_times(result, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("present", ["generic", "bucketed"])
def test_a_path_the_package_lacks_is_skipped_with_the_reason(cpu_bench, monkeypatch, present):
    _install_package(monkeypatch, cpu_bench, paths=(present,))
    missing = "bucketed" if present == "generic" else "generic"
    result = run_benchmark(_settings())
    assert [r.get("published_path") for r in result["rows"]] == [None, present]
    reason = result["environment"]["published_kernels"]["skipped"][missing]
    assert result["environment"]["published_kernels"]["paths"] == {present: published.PATHS[present]}
    assert reason == f"superlinear 0.0.test has no {published.MODULE}.{published.PATHS[missing]}"
    assert list(published.prefill_fns(protocol.SETTINGS["released"]())) == [present]
    table = format_table(result)
    assert f"published {missing} path skipped: {reason}" in table
    assert f"published released forward at 64: only path timed {present}" in table


def test_a_failing_path_gives_a_row_with_its_error_and_the_other_path_still_runs(cpu_bench, monkeypatch):
    _install_package(monkeypatch, cpu_bench, failing=("bucketed",))
    result = run_benchmark(_settings())
    failed = result["rows"][2]
    assert failed["published_path"] == "bucketed" and failed["superlinear_ms"] is None
    assert failed["published_error"] == "RuntimeError: CUDA out of memory. Tried to allocate 8.00 GiB"
    assert result["rows"][1]["superlinear_ms"] == GENERIC_MS
    assert result["published_fastest"][0]["path"] == "generic"
    assert ("published bucketed released forward at 64: failed (RuntimeError: CUDA out of memory. Tried to "
            "allocate 8.00 GiB)") in format_table(result)


def test_chunked_prefill_times_each_path(cpu_bench, monkeypatch):
    _install_package(monkeypatch, cpu_bench)
    cfg = _settings()
    inputs = protocol._inputs(cfg, 64, q_rows=cfg.chunk)
    rows = protocol._published_rows(cfg, "prefill_chunked", "balanced", protocol.SETTINGS["balanced"](), 64, inputs,
                                    None, 100)
    assert [(r["setting"], r["pass"], r["superlinear_ms"]) for r in rows] == [
        ("published generic balanced", "prefill_chunked", GENERIC_MS),
        ("published bucketed balanced", "prefill_chunked", BUCKETED_MS)]
    positions = [kw["cache_position"].tolist() for p, kw in cpu_bench.calls if p == "generic"]
    assert positions[:2] == [list(range(32)), list(range(32, 64))]
    # each chunk attends to the keys up to its end
    assert [kw["keys"] for p, kw in cpu_bench.calls if p == "generic"][:2] == [32, 64]


def test_without_the_package_no_published_rows(cpu_bench, monkeypatch):
    monkeypatch.setattr(published, "available", lambda: False)
    result = run_benchmark(_settings())
    assert [r["setting"] for r in result["rows"]] == ["released"] and "published_fastest" not in result
    info = result["environment"]["published_kernels"]
    assert not info["installed"] and set(info["skipped"]) == {"generic", "bucketed"}
    assert "published" not in format_table(result).split("\n", 1)[1]


def test_an_unusable_install_skips_every_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "superlinear", types.ModuleType("superlinear"))  # not a package
    for name in [n for n in sys.modules if n.startswith("superlinear.")]:
        monkeypatch.delitem(sys.modules, name)
    assert published.available()
    skipped = published.skipped_paths()
    assert set(skipped) == {"generic", "bucketed"}
    assert all(reason.startswith(f"{published.MODULE} cannot be imported (ModuleNotFoundError") for reason in
               skipped.values())
    assert published.prefill_fns(protocol.SETTINGS["released"]()) == {}
    with pytest.raises(RuntimeError, match="cannot be imported"):
        published.prefill_fn(protocol.SETTINGS["released"](), "bucketed")
    with pytest.raises(ValueError, match="unknown published-kernel path 'fast'"):
        published.prefill_fn(protocol.SETTINGS["released"](), "fast")


def test_faster_path_is_held_against_slkernels_of_the_same_pass_and_length():
    """`published_fastest` divides the faster path's time by slkernels' at the same setting, pass and length: 10 ms
    against 4 ms at 128 is 2.5 times, whatever slkernels took at 64 or in another pass."""
    from slconvert.benchmark.report import published_fastest

    rows = [{"setting": "released", "pass": p, "length": n, "superlinear_ms": ms}
            for p, n, ms in (("forward", 64, 2.0), ("prefill_chunked", 128, 1.0), ("forward", 128, 4.0))]
    rows += [{"setting": f"published {path} released", "pass": "forward", "length": 128, "superlinear_ms": ms,
              "published_path": path, "published_setting": "released"} for path, ms in (("generic", 12.0),
                                                                                        ("bucketed", 10.0))]
    [fastest] = published_fastest(rows)
    assert (fastest["length"], fastest["path"], fastest["ms"], fastest["slkernels_ms"]) == (128, "bucketed", 10.0, 4.0)
    assert fastest["slkernels_times_faster"] == 2.5
