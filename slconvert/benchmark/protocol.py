"""The benchmark protocol of docs/semantics.md: one attention layer, Superlinear (Triton) against dense SDPA.

Shape of the NVIDIA Nemotron-3-Nano attention layers: B=1, H_q=32, H_kv=2, D=128, bf16, fresh random
normal inputs per length. For each setting and length: forward, forward+backward and the decode of one
token, each with the dense baseline timed in the same process on the same GPU. 1M tokens run as a
prefill in 32K chunks (cache_position), the dense baseline as one causal call. Reported per row:
median ms, speed-up over dense, TFLOP/s over the keys actually attended, peak memory above the inputs; forward and
forward+backward rows whose `queued_calls` calls fit the time budget also time them launched back to back with one
synchronisation, per call (a short call's host time before its GPU work counts in the synchronised time, not
when a model's layers queue it: at 16K released the two differed by 8-30% on the H200 hosts measured);
decode rows also time a CUDA-graph replay (what a serving loop runs) of `decode_layers` steps in one graph, each over
a cache of its own as a model's layers are, per step (one step alone in a graph would time mostly the replay's own
launch, about dense SDPA's whole step at 16K); eager calls include Python overhead. A decode call passes what a
converted model's layer passes: the query's position as one tensor made before the timing and shared by the steps
(a model derives it once per forward for all its layers) and `check_values=False` (no host read-back per call).
Without it each step's public call would make its own position tensor, a kernel per step in the graph that no
model's graph holds. Every
eager call of a decode row reads the same K and V, as a static cache's steps do, so `superlinear_attention` replays it
from a CUDA graph from its second call on (`slkernels.decode_graphs.GRAPH_DECODE`, on by default);
SLKERNELS_GRAPH_DECODE=0 in the environment times the kernels launched on every call instead.

With the `superlinear` package installed, the forward and 1M chunked-prefill rows are followed by one row per
path of the published kernels (setting "published <path> <setting>", see published.py), on the same inputs; the
result's "published_fastest" names the faster path per setting, pass and length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from slkernels import LayerState, SuperlinearConfig, superlinear_attention
from slkernels import state as state_module

from ..errors import one_line
from . import published
from .host import device_name, versions
from .report import published_fastest
from .timing import measure, measure_graph

__all__ = ["BenchSettings", "run_benchmark", "SETTINGS"]

SETTINGS: dict[str, Callable[[], SuperlinearConfig]] = {
    "released": SuperlinearConfig.released,
    "balanced": SuperlinearConfig.balanced,
}
GIB = float(1 << 30)


@dataclass
class BenchSettings:
    lengths: list[int] = field(default_factory=lambda: [16384, 32768, 65536, 131072, 262144])
    settings: list[str] = field(default_factory=lambda: ["released", "balanced"])
    search_keys: list[str] = field(default_factory=lambda: ["anchor"])  # each setting once per search key
    passes: list[str] = field(default_factory=lambda: ["forward", "forward_backward", "decode"])
    million: bool = True  # also 1M tokens as a chunked prefill (forward) and a 1M-context decode
    chunk: int = 32768
    heads_q: int = 32
    heads_kv: int = 2
    head_dim: int = 128
    dtype: str = "bfloat16"
    budget_ms: float = 1500.0
    seed: int = 0
    decode_layers: int = 16  # decode steps per replayed CUDA graph, each over a cache of its own; the time is per step
    queued_calls: int = 20  # forward and forward+backward calls timed back to back (where they fit budget_ms)


def _inputs(cfg: BenchSettings, length: int, q_rows: int | None = None, grad: bool = False):
    dtype = getattr(torch, cfg.dtype)
    rows = length if q_rows is None else q_rows
    q = torch.randn(1, cfg.heads_q, rows, cfg.head_dim, device="cuda", dtype=dtype, requires_grad=grad)
    qs = torch.randn(1, cfg.heads_q, rows, cfg.head_dim, device="cuda", dtype=dtype, requires_grad=grad)
    k = torch.randn(1, cfg.heads_kv, length, cfg.head_dim, device="cuda", dtype=dtype, requires_grad=grad)
    v = torch.randn(1, cfg.heads_kv, length, cfg.head_dim, device="cuda", dtype=dtype, requires_grad=grad)
    return q, k, v, qs


def attended_keys(q, k, qs, config: SuperlinearConfig, cache_position=None) -> int:
    """Keys attended by all query rows and heads (window + selected spans), from the kernels' own selection."""
    from slkernels.triton_ops.entries import build_geometry
    from slkernels.triton_ops.search import search_topk

    len_kv = k.shape[2]
    pos = torch.arange(len_kv - q.shape[2], len_kv, device=q.device) if cache_position is None else cache_position
    s0 = torch.zeros(q.shape[0], dtype=torch.int64, device=q.device)
    anchors, _ = search_topk(qs.detach(), k.detach(), config, pos, s0, len_kv)
    geo = build_geometry(config, anchors, pos, s0, len_kv)
    spans = torch.where(geo.valid, geo.span_hi - geo.span_lo + 1, 0).sum()
    window = (geo.win_hi - geo.win_lo + 1).clamp_min(0).sum() * q.shape[1]
    return int(spans + window)


def _dense_keys(heads: int, length: int) -> int:
    return heads * length * (length + 1) // 2


def _row(setting, pass_name, length, sl, dense, sl_keys, dense_keys, dim, flop_mult):
    def tflops(keys, ms):
        return 4.0 * dim * keys * flop_mult / (ms * 1e-3) / 1e12 if ms and keys else None

    return {
        "setting": setting,
        "pass": pass_name,
        "length": length,
        "superlinear_ms": sl.ms if sl else None,
        "dense_ms": dense.ms if dense else None,
        "speedup": (dense.ms / sl.ms) if (sl and dense) else None,
        "superlinear_tflops": tflops(sl_keys, sl.ms) if sl else None,
        "dense_tflops": tflops(dense_keys, dense.ms) if dense else None,
        "superlinear_queued_ms": sl.queued_ms if sl else None,
        "dense_queued_ms": dense.queued_ms if dense else None,
        "queued_speedup": (dense.queued_ms / sl.queued_ms) if (sl and dense and sl.queued_ms and dense.queued_ms)
        else None,
        "superlinear_peak_gib": sl.peak_bytes / GIB if sl else None,
        "dense_peak_gib": dense.peak_bytes / GIB if dense else None,
        "inputs_gib": (sl or dense).base_bytes / GIB if (sl or dense) else None,
        "attended_keys": sl_keys,
        "dense_keys": dense_keys,
    }


def _forward_rows(cfg: BenchSettings, length: int, configs: dict[str, SuperlinearConfig]):
    q, k, v, qs = _inputs(cfg, length)
    with torch.no_grad():
        dense = measure(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                        budget_ms=cfg.budget_ms, queued=cfg.queued_calls)
        for name, config in configs.items():
            keys = attended_keys(q, k, qs, config)
            sl = measure(partial(superlinear_attention, q, k, v, qs, config, backend="triton"), budget_ms=cfg.budget_ms,
                         queued=cfg.queued_calls)
            yield _row(name, "forward", length, sl, dense, keys, _dense_keys(cfg.heads_q, length), cfg.head_dim, 1.0)
            if published.available():
                yield from _published_rows(cfg, "forward", name, config, length, (q, k, v, qs), dense, keys)


def _published_fields(path: str, name: str) -> dict:
    return {"published_path": path, "published_function": published.PATHS[path], "published_setting": name}


def _published_failure(pass_name: str, length: int, path: str, name: str, keys, dense_keys: int, err: Exception):
    """A row for a published path that raised (e.g. out of memory): no time, the error named."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    row = _row(f"published {path} {name}", pass_name, length, None, None, keys, dense_keys, 0, 1.0)
    row.update(_published_fields(path, name))
    row["published_error"] = one_line(err)
    return row


def _published_rows(cfg: BenchSettings, pass_name: str, name: str, config: SuperlinearConfig, length: int, inputs,
                    dense, keys) -> list[dict]:
    """One row per path of the published kernels, on the inputs of slkernels' row of the same pass.

    "forward": one call, timed as ours, with its output's distance from slkernels'; "prefill_chunked": the same
    chunked prefill as ours (one untimed pass first). A path that raises gets a row naming the error. None for the
    span-mean search key, which the published kernels do not have.
    """
    if config.search_key != "anchor":
        return []
    q, k, v, qs = inputs
    fns = published.prefill_fns(config)
    forward = pass_name == "forward"
    if forward and fns:
        ours = superlinear_attention(q, k, v, qs, config, backend="triton")
        position = torch.arange(length, device=q.device)
    dense_keys = _dense_keys(cfg.heads_q, length)
    rows = []
    for path, fn in fns.items():
        extra = {}
        try:
            if forward:
                run = partial(fn, q, k, v, qs, position)
                pub = measure(run, budget_ms=cfg.budget_ms)
                extra["relative_difference_vs_slkernels"] = published.relative_difference(ours, run())
            else:
                pub = measure(partial(_chunked_prefill, q, k, v, qs, cfg.chunk, fn), budget_ms=0.0, max_reps=0,
                              warmup=1)
        except Exception as err:  # noqa: BLE001 - one failing path must not end the sweep; its row names the error
            rows.append(_published_failure(pass_name, length, path, name, keys, dense_keys, err))
            continue
        row = _row(f"published {path} {name}", pass_name, length, pub, dense, keys, dense_keys, cfg.head_dim, 1.0)
        rows.append({**row, **_published_fields(path, name), **extra})
    return rows


def _backward_rows(cfg: BenchSettings, length: int, configs: dict[str, SuperlinearConfig]):
    q, k, v, qs = _inputs(cfg, length, grad=True)
    grad = torch.randn_like(q)

    def dense_step():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out.backward(grad)
        q.grad = k.grad = v.grad = None

    dense = measure(dense_step, budget_ms=cfg.budget_ms, queued=cfg.queued_calls)
    for name, config in configs.items():
        def sl_step(config=config):
            out = superlinear_attention(q, k, v, qs, config, backend="triton")
            out.backward(grad)
            q.grad = k.grad = v.grad = qs.grad = None

        keys = attended_keys(q, k, qs, config)
        sl = measure(sl_step, budget_ms=cfg.budget_ms, queued=cfg.queued_calls)
        yield _row(name, "forward_backward", length, sl, dense, keys, _dense_keys(cfg.heads_q, length), cfg.head_dim, 3.5)


def _decode_rows(cfg: BenchSettings, length: int, configs: dict[str, SuperlinearConfig]):
    q, k, v, qs = _inputs(cfg, length, q_rows=1)
    with torch.no_grad():
        yield from _decode_rows_for(cfg, configs, q, k, v, qs)


def _decode_rows_for(cfg: BenchSettings, configs: dict[str, SuperlinearConfig], q, k, v, qs) -> list[dict]:
    """One decode row per setting: eager times of one token against the whole cache, and CUDA-graph times per step
    of `cfg.decode_layers` steps replayed in one graph (these inputs first, then caches of the same shape). A
    span-mean setting is also timed with a `LayerState` per cache (`superlinear_graph_kept_sums_ms`): the running
    sums kept from the untimed first call, each step checking them against the unchanged cache and writing no block
    (a generation step writes its last block too: one more block of the scan)."""
    length = k.shape[2]
    layers = [(q, k, v, qs)] + [tuple(torch.randn_like(x) for x in (q, k, v, qs)) for _ in range(cfg.decode_layers - 1)]

    def per_step(call: Callable, states: list | None = None) -> float | None:
        """Per-step ms of `call` on every cache in one graph; with `states`, cache i's calls get `state=states[i]`."""
        extra = [{}] * len(layers) if states is None else [{"state": state} for state in states]
        ms = measure_graph(lambda: [call(*inputs, **kw) for inputs, kw in zip(layers, extra)])
        return None if ms is None else ms / len(layers)

    dense_call = partial(F.scaled_dot_product_attention, enable_gqa=True)
    dense = measure(partial(dense_call, q, k, v), budget_ms=200.0, max_reps=100)
    dense_graph = per_step(lambda q, k, v, qs: dense_call(q, k, v))
    rows = []
    position = torch.tensor([length - 1], device=q.device)
    for name, config in configs.items():
        keys = attended_keys(q, k, qs, config)
        call = partial(superlinear_attention, config=config, cache_position=position, backend="triton",
                       check_values=False)
        sl = measure(partial(call, q, k, v, qs), budget_ms=200.0, max_reps=100)
        row = _row(name, "decode", length, sl, dense, keys, cfg.heads_q * length, cfg.head_dim, 1.0)
        row["superlinear_graph_ms"] = per_step(call)
        if config.search_key == "span_mean":  # kept at every length: the column is what KEEP_MIN_KEYS is set from
            threshold, state_module.KEEP_MIN_KEYS = state_module.KEEP_MIN_KEYS, 0
            try:
                row["superlinear_graph_kept_sums_ms"] = per_step(call, [LayerState() for _ in layers])
            finally:
                state_module.KEEP_MIN_KEYS = threshold
        row["dense_graph_ms"] = dense_graph
        row["graph_steps"] = len(layers)
        rows.append(row)
    return rows


def _triton_prefill(config: SuperlinearConfig) -> Callable[..., torch.Tensor]:
    """f(q, k, v, q_search, cache_position) -> output through slkernels' Triton backend."""
    return lambda q, k, v, qs, pos: superlinear_attention(q, k, v, qs, config, cache_position=pos, backend="triton")


def _chunked_prefill(q, k, v, qs, chunk: int, kernel: Callable[..., torch.Tensor]) -> None:
    """A prefill of every key in chunks of `chunk` queries; each chunk attends to all keys up to its end."""
    for start in range(0, k.shape[2], chunk):
        stop = start + chunk
        kernel(q, k[:, :, :stop], v[:, :, :stop], qs, torch.arange(start, stop, device=k.device))


def _million_superlinear(cfg: BenchSettings, configs: dict[str, SuperlinearConfig], length: int):
    dtype = getattr(torch, cfg.dtype)
    k = torch.randn(1, cfg.heads_kv, length, cfg.head_dim, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    q = torch.randn(1, cfg.heads_q, cfg.chunk, cfg.head_dim, device="cuda", dtype=dtype)
    qs = torch.randn_like(q)
    rows = []
    with torch.no_grad():
        for name, config in configs.items():
            keys = 0
            for start in range(0, length, cfg.chunk):
                stop = start + cfg.chunk
                keys += attended_keys(q, k[:, :, :stop], qs, config, torch.arange(start, stop, device="cuda"))
            # One untimed pass first: run alone (e.g. `--pass decode`), the timed pass would otherwise
            # include compiling the kernels (measured 3.9 s instead of 1.3 s on an H200).
            sl = measure(partial(_chunked_prefill, q, k, v, qs, cfg.chunk, _triton_prefill(config)), budget_ms=0.0,
                         max_reps=0, warmup=1)
            rows.append(_row(name, "prefill_chunked", length, sl, None, keys, _dense_keys(cfg.heads_q, length),
                             cfg.head_dim, 1.0))
            if published.available():
                rows.extend(_published_rows(cfg, "prefill_chunked", name, config, length, (q, k, v, qs), None, keys))
        if "decode" in cfg.passes:
            q1 = torch.randn(1, cfg.heads_q, 1, cfg.head_dim, device="cuda", dtype=dtype)
            rows.extend(_decode_rows_for(cfg, configs, q1, k, v, torch.randn_like(q1)))
    return rows


def _million_rows(cfg: BenchSettings, configs: dict[str, SuperlinearConfig], length: int = 1 << 20):
    yield from _million_superlinear(cfg, configs, length)
    torch.cuda.empty_cache()
    # Dense one-layer 1M causal prefill, once (it takes seconds): the reference point of the chunked row.
    qd, kd, vd, _ = _inputs(cfg, length)
    with torch.no_grad():
        dense = measure(partial(F.scaled_dot_product_attention, qd, kd, vd, is_causal=True, enable_gqa=True),
                        budget_ms=0.0, max_reps=0, warmup=0)
    yield _row("dense", "prefill_whole", length, None, dense, None, _dense_keys(cfg.heads_q, length), cfg.head_dim, 1.0)


def environment() -> dict:
    return {"gpu": device_name(), **versions("torch", "triton", "cuda", "python"),
            "published_kernels": published.describe()}


def bench_configs(cfg: BenchSettings) -> dict[str, SuperlinearConfig]:
    """The timed configs by row label: each setting with each search key ("released", "released span_mean")."""
    return {name if key == "anchor" else f"{name} {key}": dataclasses.replace(SETTINGS[name](), search_key=key)
            for name in cfg.settings for key in cfg.search_keys}


def run_benchmark(cfg: BenchSettings, progress: Callable[[str], None] | None = None,
                  partial_result: Callable[[dict], None] | None = None) -> dict:
    """Run the sweep; returns {"environment", "settings", "rows"} (rows as listed in the module doc).

    `partial_result` receives the result so far after every step, so a long run that is cut short still
    leaves its numbers behind.
    """
    configs = bench_configs(cfg)
    torch.manual_seed(cfg.seed)
    rows: list[dict] = []
    steps = []
    for length in cfg.lengths:
        if "forward" in cfg.passes:
            steps.append((f"forward {length}", lambda n=length: _forward_rows(cfg, n, configs)))
        if "forward_backward" in cfg.passes:
            steps.append((f"forward+backward {length}", lambda n=length: _backward_rows(cfg, n, configs)))
        if "decode" in cfg.passes:
            steps.append((f"decode {length}", lambda n=length: _decode_rows(cfg, n, configs)))
    if cfg.million:
        steps.append(("1M chunked prefill", lambda: _million_rows(cfg, configs)))
    for label, step in steps:
        if progress:
            progress(label)
        for row in step():
            rows.append(row)
        torch.cuda.empty_cache()
        if partial_result:
            partial_result(_result(cfg, rows, complete=False))
    return _result(cfg, rows, complete=True)


def _result(cfg: BenchSettings, rows: list[dict], complete: bool) -> dict:
    result = {"environment": environment(), "settings": asdict(cfg), "rows": rows, "complete": complete}
    if any(r["setting"].startswith("published ") for r in rows):
        result["published_fastest"] = published_fastest(rows)
    return result
