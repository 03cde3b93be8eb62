"""`slconvert bench` on a machine without CUDA, and the benchmark's report writers on a synthetic result."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from slconvert.benchmark.report import format_table, plot_times, write_json
from slconvert.cli import main


def _messages(result) -> str:
    text = result.output or ""
    try:
        text += result.stderr or ""
    except ValueError:  # older click: stderr not captured separately
        pass
    return text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_without_cuda_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: slconvert bench needs a CUDA GPU" in _messages(result)
    assert "Traceback" not in _messages(result)


def test_bench_rejects_bad_length(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--lengths", "16K,abc", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "'abc' is not a length" in _messages(result)


def test_host_names_the_device_and_the_versions():
    import platform

    from slconvert.benchmark.host import device_name, versions

    assert device_name("cpu") == f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    found = versions("torch", "python", "cuda", "no_such_module_for_slconvert")
    assert list(found) == ["torch", "python", "cuda", "no_such_module_for_slconvert"]
    assert found == {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
                     "no_such_module_for_slconvert": None}


def test_report_writers(tmp_path):
    rows = []
    for length, dense in ((16384, 3.5), (65536, 57.0)):
        for setting, ms in (("released", dense / 2), ("balanced", dense / 3)):
            rows.append({"setting": setting, "pass": "forward", "length": length, "superlinear_ms": ms,
                         "dense_ms": dense, "speedup": dense / ms, "superlinear_tflops": 100.0,
                         "dense_tflops": 500.0, "superlinear_peak_gib": 1.0, "dense_peak_gib": 0.5,
                         "inputs_gib": 0.1, "attended_keys": 10, "dense_keys": 20})
    rows.append(dict(rows[0], setting="published released", superlinear_ms=40.0, speedup=3.5 / 40.0,
                     relative_difference_vs_slkernels=0.012))
    result = {"environment": {"gpu": "Test GPU", "torch": "x", "triton": "y"}, "settings": {}, "rows": rows}
    write_json(result, tmp_path / "bench.json")
    plot_times(result, tmp_path / "bench.png")
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["length"] == 16384
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    table = format_table(result)
    assert "Test GPU" in table and table.count("forward") == 6  # five rows and the faster-path line
    # a published row without a path (results written before both paths were timed) came from prefill_gqa
    assert "published generic released at 16384: output differs from slkernels by 0.012" in table
    assert ("published released forward at 16384: only path timed generic, 40.0 ms; slkernels 1.8 ms, "
            "22.9x faster") in table


def test_each_setting_is_timed_with_each_search_key_and_published_rows_only_for_the_anchor_key(monkeypatch):
    """`slconvert bench --search-key anchor --search-key span_mean` (and `benchmarks/run_bench.py`): a span-mean
    config beside every setting, labelled so; the published kernels, which have the anchor key only, get no row
    for it."""
    from slconvert.benchmark import protocol

    cfg = protocol.BenchSettings(settings=["released", "balanced"], search_keys=["anchor", "span_mean"])
    configs = protocol.bench_configs(cfg)
    assert list(configs) == ["released", "released span_mean", "balanced", "balanced span_mean"]
    for name, config in configs.items():
        base = protocol.SETTINGS[name.split()[0]]()
        assert config.search_key == ("span_mean" if name.endswith("span_mean") else "anchor")
        assert config.to_dict() | {"search_key": "anchor"} == base.to_dict()
    monkeypatch.setattr(protocol.published, "prefill_fns", lambda config: pytest.fail("timed the span-mean key"))
    assert protocol._published_rows(cfg, "forward", "released span_mean", configs["released span_mean"], 16384,
                                    (None,) * 4, None, 0) == []


def test_decode_graph_time_is_per_step_over_a_cache_per_layer(monkeypatch):
    """The decode rows' graph time: `decode_layers` steps captured in one graph, each over its own cache (the first
    the eager call's), divided by their number; dense SDPA the same way. Timings faked, CPU tensors."""
    from slconvert.benchmark import protocol
    from slconvert.benchmark.timing import Measurement

    captures: list[list] = []  # per captured graph: the K of each step
    capturing = []
    positions = []  # the Superlinear calls' cache_position and check_values

    def attention(q, k, *args, **kwargs):
        if capturing:
            captures[-1].append(k)
        if "cache_position" in kwargs:
            positions.append((kwargs["cache_position"], kwargs["check_values"]))
        return q.clone()

    def measure_graph(fn):
        captures.append([])
        capturing.append(True)
        fn()
        capturing.pop()
        return 48.0

    monkeypatch.setattr(protocol, "superlinear_attention", attention)
    monkeypatch.setattr(protocol.F, "scaled_dot_product_attention", attention)
    monkeypatch.setattr(protocol, "attended_keys", lambda *a, **kw: 100)
    monkeypatch.setattr(protocol, "measure", lambda fn, **kw: (fn(), Measurement(1.0, [1.0], 0, 0))[1])
    monkeypatch.setattr(protocol, "measure_graph", measure_graph)
    cfg = protocol.BenchSettings(heads_q=4, heads_kv=2, head_dim=8, dtype="float32", decode_layers=12)
    q, k, v, qs = (torch.randn(1, h, n, 8) for h, n in ((4, 1), (2, 40), (2, 40), (4, 1)))
    [row] = protocol._decode_rows_for(cfg, {"released": protocol.SETTINGS["released"]()}, q, k, v, qs)
    assert row["superlinear_graph_ms"] == row["dense_graph_ms"] == 4.0 and row["graph_steps"] == 12
    # one query against the whole cache of 40 keys: dense reads 40 keys per head; the query sits at position 39,
    # one tensor made before the timing and shared by every step, values unchecked as a model's layers pass them
    assert (row["attended_keys"], row["dense_keys"]) == (100, 4 * 40)
    assert positions[0][0].tolist() == [39] and all(p is positions[0][0] and not c for p, c in positions)
    assert len(positions) == 1 + 12
    assert len(captures) == 2  # dense SDPA's graph and the setting's
    for keys in captures:
        assert len(keys) == 12 and keys[0] is k and all(c.shape == k.shape for c in keys)
        assert len({c.data_ptr() for c in keys}) == 12  # a cache per step: none is read twice


class _FakeClock:
    """Stands in for CUDA's events and synchronisation: `elapsed_time` is the faked GPU time between two records,
    `calls` the calls the timed function made."""

    def __init__(self, per_call_ms: float, synchronised_extra_ms: float):
        self.now, self.calls, self.per_call, self.extra = 0.0, 0, per_call_ms, synchronised_extra_ms
        self.since_sync = 0

    def call(self):
        # a call after a synchronisation waits for the host; calls queued behind it do not
        self.now += self.per_call + (self.extra if self.since_sync == 0 else 0.0)
        self.calls += 1
        self.since_sync += 1

    def event(self, enable_timing=True):
        clock = self

        class Event:
            def record(self):
                self.at = clock.now

            def elapsed_time(self, other):
                return other.at - self.at

        return Event()

    def synchronize(self):
        self.since_sync = 0


@pytest.mark.parametrize("per_call_ms,queued_runs", [(2.0, True), (200.0, False)])
def test_measure_times_queued_calls_where_they_fit_the_budget(monkeypatch, per_call_ms, queued_runs):
    """`measure(queued=N)`: besides the synchronised calls, N calls launched back to back and synchronised once, per
    call, where N calls fit the budget at the median; the synchronised time keeps the host's wait, the queued one
    does not. CUDA's events and synchronisation faked on the CPU."""
    from slconvert.benchmark import timing

    clock = _FakeClock(per_call_ms, synchronised_extra_ms=0.5)
    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "synchronize", clock.synchronize)
    for name in ("reset_peak_memory_stats", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda: 0)
    got = timing.measure(clock.call, budget_ms=1000.0, max_reps=5, queued=20)
    assert got.ms == pytest.approx(per_call_ms + 0.5)
    if queued_runs:  # the warm-up, the first call, 5 repeats, the queue
        assert got.queued_ms == pytest.approx(per_call_ms + 0.5 / 20) and clock.calls == 1 + 1 + 5 + 20
    else:  # the warm-up, the first call, the 3 repeats that fit 1000 ms; 200 ms x 20 does not fit: no queue
        assert got.queued_ms is None and clock.calls == 1 + 1 + 3


def test_span_mean_decode_rows_also_time_steps_with_kept_running_sums(monkeypatch):
    """A span-mean setting's decode row has a second graph time, each cache's steps given one `LayerState` of their
    own (the same one in the warm-up and the captured pass); an anchor setting's has none. Timings faked."""
    import dataclasses

    from slconvert.benchmark import protocol
    from slconvert.benchmark.timing import Measurement

    states: list[list] = []  # per pass of a graph measurement: the state of each step
    thresholds = set()  # KEEP_MIN_KEYS during the calls that keep running sums
    keep_min_keys = protocol.state_module.KEEP_MIN_KEYS

    def attention(q, k, *args, state=None, **kwargs):
        states[-1].append(state)
        if state is not None:
            thresholds.add(protocol.state_module.KEEP_MIN_KEYS)
        return q.clone()

    def measure_graph(fn):
        for _ in range(2):  # the warm-up call and the captured one
            states.append([])
            fn()
        return 24.0

    monkeypatch.setattr(protocol, "superlinear_attention", attention)
    monkeypatch.setattr(protocol.F, "scaled_dot_product_attention", lambda q, *a, **kw: q.clone())
    monkeypatch.setattr(protocol, "attended_keys", lambda *a, **kw: 100)
    monkeypatch.setattr(protocol, "measure", lambda fn, **kw: (states.append([]), fn(), Measurement(1.0, [1.0], 0, 0))[2])
    monkeypatch.setattr(protocol, "measure_graph", measure_graph)
    cfg = protocol.BenchSettings(heads_q=4, heads_kv=2, head_dim=8, dtype="float32", decode_layers=3)
    released = protocol.SETTINGS["released"]()
    q, k, v, qs = (torch.randn(1, h, n, 8) for h, n in ((4, 1), (2, 40), (2, 40), (4, 1)))
    anchor, mean = protocol._decode_rows_for(
        cfg, {"anchor": released, "mean": dataclasses.replace(released, search_key="span_mean")}, q, k, v, qs)
    assert "superlinear_graph_kept_sums_ms" not in anchor
    assert mean["superlinear_graph_kept_sums_ms"] == 8.0 and mean["superlinear_graph_ms"] == 8.0
    warm, captured = states[-2:]
    assert len(warm) == 3 and warm == captured and len({id(s) for s in warm}) == 3
    assert all(s is not None for s in warm)
    # the sums are kept at this length too (40 keys), and the threshold is given back after
    assert thresholds == {0} and protocol.state_module.KEEP_MIN_KEYS == keep_min_keys
    table = _format_one_row(mean)
    assert "8.000 ms a step with the span-mean running sums kept" in table


def _format_one_row(row: dict) -> str:
    from slconvert.benchmark.report import format_table

    keys = ("superlinear_ms", "dense_ms", "speedup", "superlinear_tflops", "dense_tflops", "superlinear_peak_gib",
            "dense_peak_gib")
    return format_table({"environment": {"gpu": "cpu", "torch": "-", "triton": "-"},
                         "rows": [{**{key: row.get(key) for key in keys}, **row}]})


def test_layer_rows_carry_known_speedups_throughputs_and_memory(monkeypatch):
    """A forward and a forward+backward row from faked timings: speed-up and queued speed-up are dense / Superlinear,
    TFLOP/s count 4 * D flops per attended key (3.5 times that with the backward), the dense keys are the causal
    triangle H * L * (L + 1) / 2, memory is the peak above the inputs; both passes time queued calls."""
    from slconvert.benchmark import protocol
    from slconvert.benchmark.timing import Measurement

    ran, kwargs = [], []

    def attention(q, k, v, qs, config, backend=None):
        ran.append(backend)
        return q * 1.0

    def measure(fn, **kw):  # Superlinear: 1 ms (0.5 queued), 3 GiB peak; dense SDPA: 2 ms (1.5 queued), 2 GiB
        kwargs.append(kw)
        ran.clear()
        fn()
        if ran:
            return Measurement(1.0, [1.0], 3 << 30, 1 << 30, 0.5)
        return Measurement(2.0, [2.0], 2 << 30, 1 << 30, 1.5)

    def inputs(cfg, length, q_rows=None, grad=False):
        make = lambda heads: torch.randn(1, heads, length, cfg.head_dim, requires_grad=grad)  # noqa: E731
        return make(cfg.heads_q), make(cfg.heads_kv), make(cfg.heads_kv), make(cfg.heads_q)

    monkeypatch.setattr(protocol, "superlinear_attention", attention)
    monkeypatch.setattr(protocol, "measure", measure)
    monkeypatch.setattr(protocol, "_inputs", inputs)
    monkeypatch.setattr(protocol, "attended_keys", lambda *a, **kw: 10**9)
    monkeypatch.setattr(protocol.published, "available", lambda: False)
    cfg = protocol.BenchSettings(heads_q=4, heads_kv=2, head_dim=8, dtype="float32")
    configs = {"released": protocol.SETTINGS["released"]()}
    [forward] = protocol._forward_rows(cfg, 64, configs)
    [backward] = protocol._backward_rows(cfg, 64, configs)
    dense_keys = 4 * (64 * 65 // 2)  # 4 heads, query row i reads i + 1 keys
    for row, per_key in ((forward, 1.0), (backward, 3.5)):
        assert row["speedup"] == 2.0 and row["queued_speedup"] == 3.0
        assert (row["attended_keys"], row["dense_keys"]) == (10**9, dense_keys) == (10**9, 8320)
        # 4 * D * keys flops (two matrix products of 2 * D each) in 1 ms
        assert row["superlinear_tflops"] == pytest.approx(4 * 8 * 1e9 * per_key / 1e-3 / 1e12)  # 32 and 112
        assert row["dense_tflops"] == pytest.approx(4 * 8 * 8320 * per_key / 2e-3 / 1e12)
        assert (row["superlinear_peak_gib"], row["dense_peak_gib"], row["inputs_gib"]) == (3.0, 2.0, 1.0)
    assert forward["superlinear_tflops"] == pytest.approx(32.0) and backward["superlinear_tflops"] == pytest.approx(112.0)
    assert [kw["queued"] for kw in kwargs] == [cfg.queued_calls] * 4


def test_measure_is_the_median_of_the_first_call_and_the_repeats_after_the_warm_up(monkeypatch):
    """`measure`: `warmup` untimed calls, then the first timed call and the repeats (as many as fit the budget, at
    most `max_reps`); the time is their median (4, 1, 2, 9 ms: 3 ms, where the mean is 4), the peak is what one call
    allocates on top of what was allocated before it. N queued calls that take exactly the budget at the median fit
    it. CUDA's events, synchronisation and memory counters faked on the CPU."""
    from slconvert.benchmark import timing

    clock = _FakeClock(0.0, 0.0)
    durations = iter([50.0, 50.0, 4.0, 1.0, 2.0, 9.0])

    def call():
        clock.per_call = next(durations)
        clock.call()

    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "synchronize", clock.synchronize)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: 3 << 30)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 5 << 30)
    got = timing.measure(call, budget_ms=1000.0, max_reps=3, warmup=2)
    assert clock.calls == 2 + 1 + 3
    assert got.ms_all == [4.0, 1.0, 2.0, 9.0] and got.ms == 3.0
    assert (got.peak_bytes, got.base_bytes, got.queued_ms) == (2 << 30, 3 << 30, None)

    clock = _FakeClock(2.0, 0.5)  # 2.5 ms a synchronised call: 20 queued calls take the whole 50 ms
    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "synchronize", clock.synchronize)
    assert timing.measure(clock.call, budget_ms=50.0, max_reps=5, queued=20).queued_ms == pytest.approx(2.0 + 0.5 / 20)


def test_measure_graph_is_the_median_of_the_replays_after_an_untimed_one(monkeypatch):
    """`measure_graph`: the function once eagerly and once captured, one untimed replay, then the median of the timed
    replays (1, 2, 9 ms: 2 ms, where the mean is 4); a function that cannot be captured gives None. CUDA's graphs,
    events and synchronisation faked on the CPU."""
    import contextlib

    from slconvert.benchmark import timing

    clock = _FakeClock(0.0, 0.0)
    durations = iter([7.0, 1.0, 2.0, 9.0])

    class Graph:
        def replay(self):
            clock.per_call = next(durations)
            clock.call()

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "synchronize", clock.synchronize)
    steps = []
    assert timing.measure_graph(lambda: steps.append(1), replays=3) == 2.0
    assert len(steps) == 2 and clock.calls == 1 + 3
    assert timing.measure_graph(lambda: 1 / 0) is None


def test_bench_options_reach_the_sweep_settings(monkeypatch, tmp_path):
    """`slconvert bench` on a GPU (faked; the sweep replaced): --quick times 16K-64K without 1M on a 500 ms budget,
    --no-million drops 1M from the default lengths, a search key given twice is timed once, in the order given."""
    import slconvert.benchmark

    settings = []

    def run_benchmark(cfg, progress=None, partial_result=None):
        settings.append(cfg)
        return {"environment": {"gpu": "Test GPU", "torch": "-", "triton": "-"}, "settings": {}, "rows": [],
                "complete": True}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(slconvert.benchmark, "run_benchmark", run_benchmark)
    for i, args in enumerate((["--quick", "--search-key", "span_mean", "--search-key", "anchor", "--search-key",
                               "span_mean"], ["--no-million"])):
        result = CliRunner().invoke(main, ["bench", *args, "--out", str(tmp_path / str(i))])
        assert result.exit_code == 0, _messages(result)
    quick, default = settings
    assert (quick.lengths, quick.million, quick.budget_ms) == ([16384, 32768, 65536], False, 500.0)
    assert quick.search_keys == ["span_mean", "anchor"]
    assert (default.lengths, default.million, default.budget_ms) == ([16384, 32768, 65536, 131072, 262144], False,
                                                                      1500.0)
    assert default.search_keys == ["anchor"]
