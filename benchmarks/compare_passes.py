"""Same-run comparisons of kernel variants, for benchmarks/NOTES.md.

    python benchmarks/compare_passes.py [--packages slkernels,OTHER] [--loads off,on] [--forward] [LENGTH ...]
                                        (default 65536 262144; --loads: K/V load variants to time;
                                        --forward: no backward)
    python benchmarks/compare_passes.py --decode [--packages slkernels,OTHER] [--set NAME=VALUE ...] [--layers N]
                                        [LENGTH ...]  (default 16384 65536 1048576)

For every package named (a copy of slkernels importable under another name gives a before/after in one
process) it times the search and the whole forward and backward (CUDA events, median of 5 runs), the attention
passes reading K/V with plain loads or through tensor descriptors (`attend.DESCRIPTORS`).

`--decode` times one decode step instead (B = 1, 32 query / 2 KV heads, D = 128, bf16, the query at the last
position; released and balanced), each package's and each `--set` variant's (this tree's `decode.NAME` set to the
Python literal VALUE, e.g. `--set "WINDOW_TILE=(64, 32)"`; several settings of one variant apart by ";",
`--set "DECODE_PDL=True; WINDOW_CHUNKS=None"`), as CUDA-graph replays (median of 100), all of them timed
in turn twice, with dense SDPA beside them, and the largest difference of each output from the first package's.
`--layers N` captures N steps, each over a cache of its own, in one graph and reports the time per step: a graph
of one short step is bound by the replay's own launch (about 10-15 us on an H200, dense SDPA's time at 16K),
where a model's graph holds a step per layer. It prints the card, then one JSON line per measurement
(`{"setting", "length", "layers", "step", "rep", "ms"}`, ms per step, or `{..., "max_diff"}`). `decode_logs.py` reads
such a log back (the results folders' plot scripts).

Per-pass timings and tilings are `profile_passes.py`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import sys

import profile_passes  # this folder is on sys.path when the script runs
import settings
import torch
from slkernels import SuperlinearConfig

timed = functools.partial(profile_passes.timed, reps=5)


def whole(package: str, cfg: SuperlinearConfig, length: int, data, loads: tuple[str, ...], backward: bool) -> None:
    fn = importlib.import_module(f"{package}.triton_ops.function")
    search = importlib.import_module(f"{package}.triton_ops.search")
    switch = getattr(importlib.import_module(f"{package}.triton_ops.attend"), "DESCRIPTORS", None)
    q, k, v, qs, pos, s0 = data
    scale = 128**-0.5
    timed(f"[{package}] search", lambda: search.search_topk(qs, k, cfg, pos, s0, length))
    default = switch[0] if switch else None
    for mode in loads if switch else (None,):
        if switch:
            switch[0] = mode
        label = f"[{package}]" + (f" K/V descriptors {mode}" if mode else "")
        timed(f"{label} whole forward", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length))
        timed(f"{label} whole forward, no gradient",
              lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length, False))
        if not backward:
            continue
        out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        grad = torch.randn_like(out)
        timed(f"{label} whole backward", lambda grad=grad, saved=saved: fn.backward_pass(grad, q, k, v, qs, saved, scale))
        del out, saved, grad
    if switch:
        switch[0] = default


def decode_steps(packages: list[str], sets: list[str], lengths: list[int], layers: int = 1) -> None:
    """`--decode`: every package's decode step and every `--set` variant of the first, in one process."""
    from slconvert.benchmark.timing import measure_graph

    modules = {name: importlib.import_module(f"{name}.triton_ops.decode") for name in packages}
    overrides = {f"{packages[0]}, {item}": settings.parse(modules[packages[0]], item) for item in sets}
    if not torch.cuda.is_available():
        raise SystemExit("error: --decode needs a CUDA GPU")
    print(json.dumps({"card": torch.cuda.get_device_name(), "MiB": torch.cuda.get_device_properties(0).total_memory
                      // 2**20, "torch": torch.__version__}), flush=True)
    for setting in ("released", "balanced"):
        for length in lengths:
            _decode_length(modules, packages, overrides, setting, length, measure_graph, layers)


def _decode_length(modules: dict, packages: list[str], overrides: dict, setting: str, length: int, measure,
                   layers: int = 1) -> None:
    torch.manual_seed(length)
    caches = []
    for _ in range(layers):  # a cache per layer: no step reads another's keys from L2
        q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        caches.append((q, k, v, qs))
    pos = torch.tensor([length - 1], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")

    def step(name, override=()):
        module = modules[name]
        cfg = importlib.import_module(name).SuperlinearConfig(
            **dataclasses.asdict(getattr(SuperlinearConfig, setting)()))

        def f():
            with settings.overridden(module, override):
                return [module.superlinear_decode(q, k, v, qs, cfg, pos, s0, 128**-0.5) for q, k, v, qs in caches]
        return f

    def dense():
        return [torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=128**-0.5, enable_gqa=True)
                for q, k, v, _ in caches]

    steps = {name: step(name) for name in packages}
    steps.update({label: step(packages[0], override) for label, override in overrides.items()})
    steps["dense SDPA"] = dense
    row = dict(setting=setting, length=length, layers=layers)
    base = torch.stack(steps[packages[0]]()).float()
    for label, f in steps.items():
        print(json.dumps(dict(row, step=label, max_diff=float((torch.stack(f()).float() - base).abs().max()))),
              flush=True)
    for rep in range(2):
        for label, f in steps.items():
            ms = measure(f)
            print(json.dumps(dict(row, step=label, rep=rep, ms=None if ms is None else ms / layers)), flush=True)


def main() -> None:
    args = sys.argv[1:]
    packages, loads = ["slkernels"], ("off", "on")
    if "--packages" in args:
        i = args.index("--packages")
        packages = args[i + 1].split(",")
        del args[i : i + 2]
    if "--decode" in args:
        layers = int(args[args.index("--layers") + 1]) if "--layers" in args else 1
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        lengths = [int(a) for i, a in enumerate(args) if a.isdigit() and (i == 0 or args[i - 1] not in ("--set",
                                                                                                      "--layers"))]
        decode_steps(packages, sets, lengths or [16384, 65536, 1 << 20], layers)
        return
    if "--loads" in args:
        i = args.index("--loads")
        loads = tuple(args[i + 1].split(","))
        del args[i : i + 2]
    backward = "--forward" not in args
    lengths = [int(x) for x in args if x != "--forward"] or [65536, 262144]
    settings = [("released", length) for length in lengths] + [("balanced", lengths[-1])]
    for name, length in settings:
        cfg = getattr(SuperlinearConfig, name)()
        print(f"{name} L={length} on {torch.cuda.get_device_name()}", flush=True)
        data = profile_passes.inputs(length)
        for package in packages:
            whole(package, cfg, length, data, loads, backward)
        del data


if __name__ == "__main__":
    main()
