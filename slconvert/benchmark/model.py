"""The whole-model benchmark: a converted checkpoint against the same model with dense attention, one device.

For each context length (B = 1, random token ids, seeded):

* prefill: the whole context in chunks of `chunk` tokens, each chunk one forward call through transformers'
  cache (a `DynamicCache` built from the model's config: KV for the attention layers, conv and SSM states for
  the Mamba-2 layers), logits of the last position only; tokens/s = length / wall time;
* decode: `decode_tokens` greedy tokens after that prefill, one eager forward each (one untimed step first);
* compiled decode: the same cache copied into a `StaticCache` and `torch.compile(model.forward,
  mode="reduce-overhead")` (CUDA graphs on a GPU), a few untimed steps, then `decode_tokens` timed ones; the
  Superlinear attention call runs inside them as one operation (`slconvert.attention.ATTENTION_OP`, on unless
  SLCONVERT_ATTENTION_OP=0), or out of them (`superlinear_outside_graph`) with it off (the row's "attention" says
  which); a model whose experts run transformers' `grouped_mm` in a dtype other than bfloat16
  runs them with `batched_mm` for this phase (the row's "experts_implementation"; see `_graph_safe_experts`);
  where transformers or torch cannot compile the model, the row says "unsupported: <reason>";
* peak device memory of each phase (weights included: `torch.cuda.max_memory_allocated`);
* with `profile_decode` N: N more eager steps under `torch.profiler` (`step_profile.profile_steps`): wall time against
  the device's busy time, kernel launches, synchronisations, and the costliest host operations and kernels.

The converted model runs first; then `model.set_attn_implementation("sdpa")` switches every attention layer
to transformers' stock SDPA (the routers stay attached but nothing calls them), and the same lengths run
again, up to the first that runs out of memory ("out of memory"; longer dense lengths are skipped). Before
each variant a 16-token forward inside `capture_attention` counts the calls of slconvert's Superlinear
function: one per converted layer for the converted model, none for the dense one, or the run stops.

Results: {"environment", "model", "settings", "attention_check", "rows", "ratios", "complete"}; one row per
(attention, length) with a dict per phase, and per length the ratios converted / dense of throughput (above 1:
the converted model is faster) and of peak memory.

The sweep runs on a live model (`bench_model`): `run_model_benchmark` loads a converted checkpoint for it, and
`convert_in_memory` converts a model built in memory exactly as `slconvert convert` + `slconvert.load` would
(routers, their initial weights, the attention function, the config's `superlinear` block), so that a model too
large to write twice to disk is benchmarked without writing it (scripts/build_nano_shape.py --bench).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..devices import resolve_device
from ..errors import SlconvertError, one_line
from ..evaluation.models import cache_keyword
from ..lengths import short_length
from .host import device_name, versions
from .protocol import GIB
from .step_profile import profile_steps

__all__ = ["ModelBenchSettings", "run_model_benchmark", "bench_model", "load_for_bench", "convert_in_memory",
           "use_attention", "converted_layer_calls", "model_summary", "PHASES", "VARIANTS"]

PHASES = ("prefill", "decode", "decode_compiled")
VARIANTS = ("superlinear", "dense")
CHECK_TOKENS = 16
COMPILED_WARMUP = 3  # compile, record the CUDA graph, first replay


@dataclass
class ModelBenchSettings:
    model: str | None = None  # the converted checkpoint; None for a model built and converted in memory
    lengths: list[int] = field(default_factory=lambda: [32768, 131072, 1 << 20])
    chunk: int = 32768
    decode_tokens: int = 8
    profile_decode: int = 0  # eager decode steps run under the profiler after the timed ones (0: none)
    compile: bool | None = None  # None: on a CUDA device only
    dense: bool = True
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str = "auto"
    seed: int = 0

    def resolved(self) -> ModelBenchSettings:
        device = str(resolve_device(self.device))
        compile_ = (torch.device(device).type == "cuda") if self.compile is None else self.compile
        return replace(self, lengths=list(self.lengths), compile=compile_, device=device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


class _Device:
    """Synchronisation and peak-memory counters of one device (no-ops and None on the CPU)."""

    def __init__(self, name: str):
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GIB if self.cuda else None

    def allocated_gib(self) -> float | None:
        return torch.cuda.memory_allocated(self.device) / GIB if self.cuda else None

    def free(self) -> None:
        if self.cuda:  # the next phase's peak starts from what the last one really left behind
            gc.collect()
            torch.cuda.empty_cache()

    def label(self) -> str:
        return device_name(self.device)


# --- loading and switching ------------------------------------------------------------------------------------

def load_for_bench(path, device: str, dtype: str = "auto"):
    """A converted checkpoint loaded straight onto `device` (transformers follows the torch.device context);
    `load` refuses anything else, a checkpoint that was never converted among them, in one line."""
    from ..loading import load

    with torch.device(device):
        return load(path, device=device, dtype=dtype)


def convert_in_memory(model, params, *, layers: str | None = None, keep_dense: str | None = None,
                      router_init: str = "host_logits", seed: int = 0) -> dict:
    """Convert a live model in place as `slconvert convert` + `slconvert.load` would; returns its `superlinear` block.

    The same plan (layer choice, attention shapes, refusals) and the same block as a conversion on disk, with
    `source.path` None and no weight hashes; each converted attention module gets its router with the weight the
    conversion would write (`ConversionPlan.router_weight` in the dtype of the module's weights), the config gets the
    block (the mask function reads it) and the model runs slconvert's attention function."""
    from ..architectures import architecture_for, layer_map
    from ..attention import register
    from ..loading import attach_superlinear
    from ..surgery.convert import superlinear_block
    from ..surgery.plan import ConversionPlan, SourceModel, check_router_init, plan_layers, settle_attention_layers

    check_router_init(router_init, "router init")
    config = model.config
    if isinstance(getattr(config, "superlinear", None), dict):
        raise SlconvertError("the model is already converted (its config has a 'superlinear' block)")
    arch = architecture_for(config.model_type)
    source = SourceModel(Path("."), config.to_dict(), config, arch, layer_map(arch, config))
    source.meta_model = model  # the module tree is the live model's (attention shapes and scales read from it)
    settle_attention_layers(source, "the model")
    chosen, shapes = plan_layers(source, layers, keep_dense)
    # Router tensor names: where the conversion of the saved model would put them (the first checkpoint prefix).
    prefixes = {i: arch.disk_candidates(i)[0] for i in chosen}
    plan = ConversionPlan(source, None, params, chosen, shapes, prefixes, router_init, seed)
    block = superlinear_block(plan, {})
    block["source"]["path"] = None
    installed = attach_superlinear(model, block)  # the block in the config: the mask function reads it
    with torch.no_grad():
        for layer, router in installed.items():
            router.weight.copy_(plan.router_weight(layer, router.weight.dtype))
    model.set_attn_implementation(register())
    model.eval()
    return block


def use_attention(model, variant: str) -> None:
    """Switch every attention layer: "superlinear" (converted layers through slconvert's function) or "dense"
    (transformers' stock SDPA everywhere)."""
    from ..attention import ATTENTION_NAME, register

    if variant == "superlinear":
        model.set_attn_implementation(register())
        name = ATTENTION_NAME
    elif variant == "dense":
        model.set_attn_implementation("sdpa")
        name = "sdpa"
    else:
        raise ValueError(f"unknown attention variant {variant!r}")
    if model.config._attn_implementation != name:
        raise SlconvertError(f"the model kept attention {model.config._attn_implementation!r} after switching to {name!r}")


@torch.no_grad()
def converted_layer_calls(model, device) -> int:
    """Calls of slconvert's Superlinear function during one short forward (one per converted layer, or none)."""
    from ..attention import capture_attention

    ids = torch.arange(4, 4 + CHECK_TOKENS, device=device)[None] % int(model.config.vocab_size)
    with capture_attention(model) as records:
        model(input_ids=ids, use_cache=False)
        return len(records)


def _pattern(config) -> str | None:
    kinds = getattr(config, "layers_block_type", None) or getattr(config, "layer_types", None)
    if not isinstance(kinds, (list, tuple)):
        return None
    letters = {"full_attention": "A", "attention": "A", "linear_attention": "M", "mamba": "M", "moe": "E", "mlp": "-"}
    return "".join(letters.get(str(kind), "?") for kind in kinds)


def model_summary(model, path=None, *, name: str | None = None, origin: str | None = None) -> dict:
    """The model's shape and conversion; `path`: its checkpoint (None for a model built in memory, then `name`
    and `origin` say what it is)."""
    if path is None and name is None:
        raise ValueError("a model without a checkpoint path needs a name")
    config = model.config
    block = getattr(config, "superlinear", None) or {}
    params = sum(p.numel() for p in model.parameters())
    experts = next((getattr(config, k) for k in ("n_routed_experts", "num_experts", "num_local_experts")
                    if getattr(config, k, None)), None)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    return {
        "path": None if path is None else str(Path(path).expanduser().resolve()),
        "name": name or Path(path).expanduser().resolve().name,
        "origin": origin or "converted checkpoint",
        "model_type": config.model_type,
        "layers": int(config.num_hidden_layers),
        "pattern": _pattern(config),
        "hidden_size": int(config.hidden_size),
        "attention_heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None),
        "head_dim": head_dim,
        "routed_experts": experts,
        "experts_per_token": getattr(config, "num_experts_per_tok", None),
        "vocab_size": int(config.vocab_size),
        "parameters": params,
        "parameters_b": params / 1e9,
        "dtypes": dtypes,
        "converted_layers": list(block.get("layers", [])),
        "dense_attention_layers": list(block.get("dense_attention_layers", [])),
        "window": block.get("window"),
        "superlinear_params": block.get("params"),
        "experts_implementation": getattr(config, "_experts_implementation", None),
    }


def environment(device: _Device) -> dict:
    return {"gpu": device.label(), "device": str(device.device),
            **versions("torch", "transformers", "triton", "cuda", "python", "slconvert")}


# --- one forward at a time -----------------------------------------------------------------------------------------

def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _prefill(model, ids, chunk: int, dev: _Device, note: Callable[[str], None]):
    """Chunked prefill through a fresh cache; returns (cache, next token [1, 1], seconds)."""
    key = cache_keyword(model)
    cache = _new_cache(model)
    length = ids.shape[1]
    n_chunks = -(-length // chunk)
    dev.sync()
    start = time.perf_counter()
    for i, lo in enumerate(range(0, length, chunk)):
        out = model(input_ids=ids[:, lo:lo + chunk], use_cache=True, logits_to_keep=1, **{key: cache})
        returned = getattr(out, key, None)
        cache = cache if returned is None else returned
        note(f"{i + 1}/{n_chunks} chunks")
    token = out.logits[:, -1:].argmax(-1)
    dev.sync()
    return cache, token, time.perf_counter() - start


def _decode(step: Callable, token, position: int, steps: int, warmup: int, dev: _Device):
    """`warmup` untimed then `steps` timed greedy steps; returns (per-step seconds, next token, next position)."""
    times = []
    for i in range(warmup + steps):
        dev.sync()
        start = time.perf_counter()
        logits = step(token, position)
        token = logits[:, -1:].argmax(-1)
        dev.sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        position += 1
    return times, token, position


def _eager_step(model, cache):
    key = cache_keyword(model)

    def step(token, _position):
        return model(input_ids=token, use_cache=True, **{key: cache}).logits

    return step


def static_copy(model, cache, max_cache_len: int):
    """A `StaticCache` holding what the dynamic `cache` holds (KV copied, Mamba/linear states moved over); the
    dynamic cache's attention tensors are released."""
    from transformers import StaticCache
    from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin, StaticLayer

    static = StaticCache(config=model.config, max_cache_len=max_cache_len)
    if len(static.layers) != len(cache.layers):
        raise NotImplementedError(f"static cache has {len(static.layers)} layers, the dynamic one {len(cache.layers)}")
    for i, (target, source) in enumerate(zip(static.layers, cache.layers)):
        if isinstance(target, LinearAttentionCacheLayerMixin) or isinstance(source, LinearAttentionCacheLayerMixin):
            if type(target) is not type(source):
                raise NotImplementedError(f"layer {i}: no static copy of a {type(source).__name__} "
                                          f"into a {type(target).__name__}")
            static.layers[i] = source  # fixed-size states, already at static addresses
        elif type(target) is StaticLayer and type(source) is DynamicLayer:
            if source.is_initialized and source.keys is not None and source.keys.numel():
                target.update(source.keys, source.values)
                source.keys = source.values = None
        elif getattr(target, "keys", 0) is None and getattr(source, "keys", 0) is None:
            continue  # a layer without a cache (MoE / MLP)
        else:
            raise NotImplementedError(f"layer {i}: no static copy of a {type(source).__name__} "
                                      f"into a {type(target).__name__}")
    return static


@contextlib.contextmanager
def superlinear_outside_graph():
    """While active, torch.compile leaves slconvert's attention function out of its graphs (it runs eagerly
    between them): the function and the kernels' entry read query positions back to the host, which under
    tracing means a graph break and a recompilation at every decode position."""
    from transformers import AttentionInterface

    from ..attention import ATTENTION_NAME, register, superlinear_attention_forward

    register()
    AttentionInterface.register(ATTENTION_NAME, torch.compiler.disable(superlinear_attention_forward))
    try:
        yield
    finally:
        AttentionInterface.register(ATTENTION_NAME, superlinear_attention_forward)


GROUPED_EXPERTS, GATHERED_EXPERTS = "grouped_mm", "batched_mm"  # transformers' names of the two experts implementations


@contextlib.contextmanager
def compiled_decode_setting(model, dev: _Device, in_graph: bool):
    """What the compiled decode changes while it runs, undone after: the Superlinear call kept out of the graphs
    unless `in_graph`, dynamo's recompile limit, and the experts' implementation where transformers' default
    cannot be captured in a CUDA graph. Yields the experts implementation it set, or None."""
    switched = _graph_safe_experts(model, dev)
    try:
        with (contextlib.nullcontext() if in_graph else superlinear_outside_graph()), \
                _recompile_limit(4 * int(model.config.num_hidden_layers)):
            yield switched
    finally:
        if switched:
            model.set_experts_implementation(GROUPED_EXPERTS)


def _graph_safe_experts(model, dev: _Device) -> str | None:
    """Under torch.compile transformers' `grouped_mm` experts take bfloat16 weights only; in any other dtype they
    fall back to a loop that reads the experts' token offsets on the host, which a CUDA graph cannot capture.
    There `batched_mm` (each token's experts gathered, no host read; the same outputs) runs instead."""
    config = model.config
    if not dev.cuda or getattr(config, "_experts_implementation", None) != GROUPED_EXPERTS \
            or model.dtype == torch.bfloat16:
        return None
    model.set_experts_implementation(GATHERED_EXPERTS)
    return GATHERED_EXPERTS


def _recompile_limit(limit: int):
    """Raise dynamo's per-function recompile limit: the frames resumed after each eager attention call are
    compiled once per attention layer (the guard is the layer index)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(getattr(config, name), limit)})


def compile_forward(forward, mode: str):
    """The compiled forward of the compiled-decode phase (a module function, so that tests can replace it)."""
    return torch.compile(forward, mode=mode, dynamic=False)


def _compiled_step(model, static, dev: _Device):
    key = cache_keyword(model)
    forward = compile_forward(model.forward, "reduce-overhead" if dev.cuda else "default")

    def step(token, _position):
        if dev.cuda:
            torch.compiler.cudagraph_mark_step_begin()
        # No `cache_position`, as transformers' generate passes none: the static cache counts the tokens it holds,
        # and the converted layers read their query's position from the mask (`slconvert.attention.query_positions`).
        return forward(input_ids=token, use_cache=True, **{key: static}).logits

    return step


def _phase_row(status: str = "ok", **values) -> dict:
    return {"status": status, **values}


def _decode_row(times: list[float], peak) -> dict:
    total = sum(times)
    return _phase_row(tokens=len(times), seconds=total, tokens_per_s=len(times) / total if total else None,
                      ms_per_token=1e3 * statistics.median(times) if times else None, peak_gib=peak)


# --- the sweep -----------------------------------------------------------------------------------------------

class _Runner:
    def __init__(self, cfg: ModelBenchSettings, model, dev: _Device, progress, compile_asked: bool | None = None):
        self.cfg, self.model, self.dev, self.progress = cfg, model, dev, progress
        self.compile_asked = compile_asked
        self.generator = torch.Generator().manual_seed(cfg.seed)
        vocab = int(model.config.vocab_size)
        self.low = 4 if vocab > 8 else 0  # past the special ids of slconvert's tokenizers
        self.vocab = vocab

    def ids(self, length: int):
        return torch.randint(self.low, self.vocab, (1, length), generator=self.generator).to(self.dev.device)

    def note(self, text: str) -> None:
        if self.progress:
            self.progress(text, 0)

    def advance(self, label: str, units: int = 1) -> None:
        if self.progress:
            self.progress(label, units)

    @torch.no_grad()
    def warmup(self) -> None:
        """Untimed: compile the kernels of a first chunk, of a chunk after it and of a decode step."""
        length = min(max(self.cfg.lengths), 2 * self.cfg.chunk)
        try:
            cache, token, _ = _prefill(self.model, self.ids(length), self.cfg.chunk, self.dev, lambda _t: None)
            _decode(_eager_step(self.model, cache), token, length, 0, 2, self.dev)
            del cache, token
        except Exception as err:  # noqa: BLE001 - out of memory here shows again, and is recorded, in the sweep
            if not _is_oom(err):
                raise
        self.dev.free()

    @torch.no_grad()
    def length_row(self, variant: str, length: int) -> dict:
        cfg, dev, model = self.cfg, self.dev, self.model
        label = f"{variant} {short_length(length)}"
        row = {"attention": variant, "length": length, "status": "ok"}
        ids = self.ids(length)
        cache = token = None
        # prefill
        self.note(f"{label} prefill")
        try:
            dev.start()
            cache, token, seconds = _prefill(model, ids, cfg.chunk, dev, lambda t: self.note(f"{label} prefill {t}"))
            row["prefill"] = _phase_row(seconds=seconds, tokens_per_s=length / seconds, chunks=-(-length // cfg.chunk),
                                        peak_gib=dev.peak_gib())
        except Exception as err:  # noqa: BLE001 - only running out of memory is a result; the rest re-raises
            if not _is_oom(err):
                raise
            row["prefill"] = _phase_row("out of memory")
        del ids
        self.advance(f"{label} prefill")
        if cache is None:
            row["status"] = "out of memory"
            for phase in PHASES[1:]:
                row[phase] = _phase_row("skipped: the prefill ran out of memory")
                self.advance(f"{label} {phase}")
            self.dev.free()
            return row
        # eager decode
        self.note(f"{label} decode")
        position = length
        try:
            dev.start()
            times, token, position = _decode(_eager_step(model, cache), token, position, cfg.decode_tokens, 1, dev)
            row["decode"] = _decode_row(times, dev.peak_gib())
            if cfg.profile_decode:
                self.note(f"{label} decode profile")
                row["decode_profile"], token, position = profile_steps(_eager_step(model, cache), token, position,
                                                                       cfg.profile_decode, dev.device)
        except Exception as err:  # noqa: BLE001
            if not _is_oom(err):
                raise
            row["decode"] = _phase_row("out of memory")
            row["status"] = "out of memory"
        self.advance(f"{label} decode")
        # compiled decode
        self.note(f"{label} compiled decode")
        if row["status"] == "out of memory":
            row["decode_compiled"] = _phase_row("skipped: the eager decode ran out of memory")
        else:
            row["decode_compiled"] = self.compiled(cache, token, position, variant)
            if row["decode_compiled"]["status"] == "out of memory":
                row["status"] = "out of memory"
        del cache, token
        self.dev.free()
        self.advance(f"{label} compiled decode")
        return row

    def compiled(self, cache, token, position: int, variant: str) -> dict:
        cfg, dev = self.cfg, self.dev
        if not cfg.compile:
            reason = "--no-compile" if self.compile_asked is False else "no CUDA device; pass --compile to try it on the CPU"
            return _phase_row(f"not run: {reason}")
        from .. import attention

        in_graph = attention.ATTENTION_OP
        try:
            dev.start()
            static = static_copy(self.model, cache, position + COMPILED_WARMUP + cfg.decode_tokens + 1)
            with compiled_decode_setting(self.model, dev, in_graph) as experts:
                step = _compiled_step(self.model, static, dev)
                times, _, _ = _decode(step, token, position, cfg.decode_tokens, COMPILED_WARMUP, dev)
            result = _decode_row(times, dev.peak_gib())
            if experts:
                result["experts_implementation"] = experts
            if variant != "dense":  # where the Superlinear call ran (dense SDPA has none)
                result["attention"] = "in the graph" if in_graph else "eagerly between the graphs"
        except Exception as err:  # noqa: BLE001 - a model torch/transformers cannot compile is a result, not a crash
            result = _phase_row("out of memory" if _is_oom(err) else f"unsupported: {one_line(err, 200)}")
        finally:
            static = step = None  # noqa: F841 - drop the graphs' references before the reset
            _reset_compiler()
        return result


def _reset_compiler() -> None:
    try:
        torch.compiler.reset()
    except Exception:  # noqa: BLE001 - a reset that fails leaves only memory behind
        pass


def _ratio(a, b):
    return a / b if (a is not None and b) else None


def ratios(rows: list[dict]) -> list[dict]:
    """Per length: converted / dense of tokens/s (prefill, decode, compiled decode) and of peak memory."""
    by = {(r["attention"], r["length"]): r for r in rows}
    out = []
    for length in sorted({r["length"] for r in rows}):
        sl, dense = by.get(("superlinear", length)), by.get(("dense", length))
        if sl is None or dense is None:
            continue
        entry = {"length": length}
        for phase in PHASES:
            a, b = sl.get(phase, {}), dense.get(phase, {})
            entry[f"{phase}_speed"] = _ratio(a.get("tokens_per_s"), b.get("tokens_per_s"))
            entry[f"{phase}_memory"] = _ratio(a.get("peak_gib"), b.get("peak_gib"))
        out.append(entry)
    return out


def run_model_benchmark(cfg: ModelBenchSettings, progress: Callable[[str, int], None] | None = None,
                        partial_result: Callable[[dict], None] | None = None, model=None) -> dict:
    """The sweep on the converted checkpoint `cfg.model`, loaded here unless `model` is that checkpoint already
    loaded (see `bench_model`)."""
    if model is None:
        if cfg.model is None:
            raise SlconvertError("no model to benchmark: give a converted checkpoint")
        model = load_for_bench(cfg.model, cfg.resolved().device, cfg.dtype)  # resolved(): the device checked
    return bench_model(model, cfg, progress, partial_result)


def bench_model(model, cfg: ModelBenchSettings, progress: Callable[[str, int], None] | None = None,
                partial_result: Callable[[dict], None] | None = None, *, name: str | None = None,
                origin: str | None = None) -> dict:
    """Run the sweep (module docstring) on a live converted model already on `cfg.device` (random token ids
    below its vocabulary size; no tokenizer needed). `progress(label, units)` advances a progress bar by `units`
    (0: a note), `partial_result` gets the result so far after every length; `name` / `origin` describe a
    model that has no checkpoint (`cfg.model` None)."""
    compile_asked = cfg.compile
    cfg = cfg.resolved()  # the device checked (`devices.resolve_device`)
    dev = _Device(cfg.device)
    torch.manual_seed(cfg.seed)
    summary = model_summary(model, cfg.model, name=name, origin=origin)
    summary["weights_gib"] = dev.allocated_gib()
    result = {"environment": environment(dev), "model": summary, "settings": asdict(cfg), "attention_check": {},
              "rows": [], "ratios": [], "complete": False}
    runner = _Runner(cfg, model, dev, progress, compile_asked)
    variants = VARIANTS if cfg.dense else VARIANTS[:1]
    try:  # the caller's model goes back to Superlinear attention however the sweep ends
        for variant in variants:
            use_attention(model, variant)
            calls = converted_layer_calls(model, dev.device)
            expected = len(summary["converted_layers"]) if variant == "superlinear" else 0
            result["attention_check"][variant] = {"superlinear_calls_per_forward": calls, "expected": expected}
            if calls != expected:
                raise SlconvertError(f"{variant} attention made {calls} Superlinear call(s) in one forward, expected "
                                     f"{expected}; the attention switch did not take effect")
            runner.note(f"{variant} warm-up")
            runner.warmup()
            failed_at = None
            for length in cfg.lengths:
                if failed_at is not None:
                    row = {"attention": variant, "length": length,
                           "status": f"skipped: out of memory at {short_length(failed_at)}"}
                    for phase in PHASES:
                        row[phase] = _phase_row(row["status"])
                        runner.advance(f"{variant} {short_length(length)} skipped")
                else:
                    row = runner.length_row(variant, length)
                    if row["status"] == "out of memory":
                        failed_at = length
                result["rows"].append(row)
                result["ratios"] = ratios(result["rows"])
                if partial_result:
                    partial_result(result)
    finally:
        use_attention(model, "superlinear")
    result["complete"] = True
    return result
