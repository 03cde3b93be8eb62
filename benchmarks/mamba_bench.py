"""One Mamba-2 mixer at Nemotron-3-Nano-30B-A3B's width on a CUDA GPU: the fast path (slconvert.fast_mamba,
fla-core's Triton kernels) against transformers' PyTorch fallback, in the same run.

The mixer is transformers' NemotronHMamba2Mixer with the checkpoint's Mamba-2 shape (hidden 2688, 64 heads of
64, 8 groups, 128 states, conv width 4, chunk 128; the values scripts/pipeline_gpu_check.sh builds the
full-size model with), bf16, random weights, batch 1. Measured per length:

* train: forward + backward in training mode without a cache (the fast path's fused
  `mamba_split_conv1d_scan_combined`; the fallback's unfused PyTorch path), median of --repeats steps;
* prefill: forward in eval mode without gradients (causal conv1d + chunked scan);
* peak memory above the inputs and weights for each, and that peak per 1K tokens;
* decode: one token's convolution update and state update (the kernels the mixer calls per generated token).

The fallback is transformers' own PyTorch code, reached by pointing the modeling module's kernel functions
back at it for its half of the run. Lengths where the fallback would not fit are skipped for it
(--fallback-max). Writes JSON (--out) with a summary: speed-up at each length and whether the >= 10x target
at 32K (forward + backward) is met.

    python benchmarks/mamba_bench.py --out mamba_bench.json [--lengths 4096,32768] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time

import torch

from slconvert.benchmark import timing
from slconvert.benchmark.host import device_name, versions

NANO = dict(hidden=2688, mamba_num_heads=64, mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4,
            chunk_size=128)


def build_mixer(dtype):
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMamba2Mixer

    from slconvert.tiny import tiny_config

    config = tiny_config("nemotron_h", hidden=NANO["hidden"])
    for key, value in NANO.items():
        if key != "hidden":
            setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device("cuda"):
        mixer = NemotronHMamba2Mixer(config, layer_idx=0)
    return mixer.to(dtype), config


def timed(fn, repeats, warmup=2) -> timing.Measurement:
    """`timing.measure` with exactly `repeats` timed calls after `warmup` untimed ones (no time budget); its peak
    memory is that of the first timed call."""
    return timing.measure(fn, budget_ms=math.inf, max_reps=max(repeats - 1, 0), warmup=warmup)


def measure(mixer, length, repeats, dtype, train: bool):
    hidden = torch.randn(1, length, NANO["hidden"], device="cuda", dtype=dtype, requires_grad=train)
    grad = torch.randn_like(hidden) if train else None

    def step():
        if train:
            mixer.zero_grad(set_to_none=True)
            hidden.grad = None
            mixer(hidden).backward(grad)
        else:
            with torch.no_grad():
                mixer(hidden)

    mixer.train(train)
    result = timed(step, repeats)
    peak = result.peak_bytes
    return {"ms": round(result.ms, 3), "best_ms": round(min(result.ms_all), 3), "peak_gib": round(peak / 2**30, 3),
            "gib_per_1k_tokens": round(peak / 2**30 / (length / 1024), 4),
            "tokens_per_s": round(length / (result.ms / 1000))}


def measure_decode(mixer, module, repeats, dtype):
    """One token through the mixer's decode kernels: conv update then state update (batch 1)."""
    conv_dim, heads, p, n = mixer.conv_dim, mixer.num_heads, mixer.head_dim, mixer.ssm_state_size
    g = mixer.n_groups
    conv_state = torch.randn(1, conv_dim, mixer.conv_kernel_size, device="cuda", dtype=dtype)
    ssm_state = torch.randn(1, heads, p, n, device="cuda", dtype=torch.float32)
    xbc = torch.randn(1, conv_dim, 1, device="cuda", dtype=dtype)
    dt = torch.randn(1, heads, device="cuda", dtype=dtype)
    A = -torch.exp(mixer.A_log.float())
    weight = mixer.conv1d.weight.squeeze(1)

    @torch.no_grad()
    def step():
        out = module.causal_conv1d_update(xbc, conv_state, weight, mixer.conv1d.bias, activation=mixer.activation)
        x, B, C = out[..., 0].split([heads * p, g * n, g * n], dim=-1)
        module.mamba2_selective_state_update(
            ssm_state, x.view(1, heads, p), dt[..., None].expand(-1, -1, p), A[:, None, None].expand(-1, p, n),
            B.view(1, g, n), C.view(1, g, n), mixer.D[:, None].expand(-1, p), z=None,
            dt_bias=mixer.dt_bias[:, None].expand(-1, p), dt_softplus=True)

    result = timed(step, max(repeats, 20), warmup=5)
    return {"ms": round(result.ms, 4), "best_ms": round(min(result.ms_all), 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="mamba_bench.json")
    parser.add_argument("--lengths", default="4096,32768")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--fallback-max", type=int, default=65536, help="longest length the fallback runs at")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("mamba_bench: needs a CUDA device")
    import slconvert  # noqa: F401  (registers the fast path before transformers' modeling code is imported)
    from slconvert import fast_mamba

    dtype = getattr(torch, args.dtype)
    mixer, config = build_mixer(dtype)
    module = sys.modules[type(mixer).__module__]
    status = fast_mamba.status()
    if not status["usable"]:
        sys.exit(f"mamba_bench: the fast path is not active ({status['reason'] or 'mamba-ssm installed?'})")
    lengths = [int(x) for x in args.lengths.split(",") if x]
    report = {
        "what": "one NemotronHMamba2Mixer at Nemotron-3-Nano width, fast path vs transformers' PyTorch fallback",
        "device": device_name(), "dtype": args.dtype, "batch": 1,
        "versions": versions("python", "torch", "transformers", "triton", "fla"),
        "shape": NANO, "repeats": args.repeats, "fast_path": status, "results": {}, "summary": {},
    }
    started = time.time()
    for path in ("fast", "fallback"):
        context = fast_mamba.transformers_torch(module) if path == "fallback" else contextlib.nullcontext()
        with context:
            rows = report["results"].setdefault(path, {})
            rows["decode"] = measure_decode(mixer, module, args.repeats, dtype)
            print(f"{path:8s} decode: {rows['decode']['ms']:.4f} ms/token", flush=True)
            for length in lengths:
                if path == "fallback" and length > args.fallback_max:
                    rows[str(length)] = {"skipped": f"longer than --fallback-max {args.fallback_max}"}
                    continue
                row = {}
                for mode, train in (("train", True), ("prefill", False)):
                    try:
                        row[mode] = measure(mixer, length, args.repeats, dtype, train)
                    except torch.OutOfMemoryError:
                        row[mode] = {"skipped": "out of memory"}
                    torch.cuda.empty_cache()
                    print(f"{path:8s} {length:>7d} {mode:7s} {json.dumps(row[mode])}", flush=True)
                rows[str(length)] = row
    fast, slow = report["results"]["fast"], report["results"]["fallback"]
    for length in lengths:
        key = str(length)
        for mode in ("train", "prefill"):
            a, b = fast.get(key, {}).get(mode, {}), slow.get(key, {}).get(mode, {})
            if "ms" in a and "ms" in b:
                report["summary"][f"{mode}_speedup_{key}"] = round(b["ms"] / a["ms"], 2)
                report["summary"][f"{mode}_memory_ratio_{key}"] = round(b["peak_gib"] / max(a["peak_gib"], 1e-9), 2)
        # Where the fallback ran out of memory, its need is estimated from its memory per 1K tokens at the
        # longest length it ran (its intermediates grow linearly with the length).
        for mode in ("train", "prefill"):
            if slow.get(key, {}).get(mode, {}).get("skipped") == "out of memory":
                ran = [slow[str(n)][mode] for n in lengths if "gib_per_1k_tokens" in slow.get(str(n), {}).get(mode, {})]
                if ran:
                    report["summary"][f"{mode}_fallback_estimated_gib_{key}"] = round(
                        ran[-1]["gib_per_1k_tokens"] * length / 1024, 1)
    report["summary"]["decode_speedup"] = round(slow["decode"]["ms"] / fast["decode"]["ms"], 2)
    target = report["summary"].get("train_speedup_32768")
    report["summary"]["target_10x_at_32k_train"] = None if target is None else bool(target >= 10)
    report["calls"] = dict(fast_mamba.CALLS)
    report["seconds"] = round(time.time() - started, 1)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
