"""Host time of one decode step: what an eager call costs the CPU besides the GPU's work.

Called eagerly, as transformers' `generate` calls it, a decode step is bound by its host time once that exceeds
the GPU's (0.07 ms at 16K as a CUDA-graph replay on an H200, benchmarks/NOTES.md item 15).

Without `--cuda` the three Triton kernels are stubbed out and the inputs are CPU tensors: the project's own host
work (Python, argument checks, table lookups, allocations), on any machine. With `--cuda` (a GPU) the kernels
run: each launch's host time is measured around it (Triton's argument binding and the driver call), and the step
is timed eagerly (synchronised after every call, and back to back) and as a CUDA-graph replay, as the model's
attention layers call it (`check_values=False`, bfloat16, 32 query / 2 KV heads of 128). `--direct` adds the same
eager step with each kernel launched through the compiled kernel that its first launch returned (Triton's
`CompiledKernel[grid](*every_argument)`), skipping `JITFunction.run`'s per-call binding, specialization and cache
key: a probe of what that launch path would save, checked to give the same output to the bit. `--replayed` adds
the eager step with `decode_graphs.GRAPH_DECODE` on (the other rows turn it off, whatever its default): the same cache
every call, so from the second call the step is replayed from a CUDA graph (one copy in of the per-step tensors, one
graph launch, one copy out), checked against the plain step's output (with `--profile`, profiled too).

    python benchmarks/decode_host_time.py [--length 65536] [--calls 2000] [--profile]
    python benchmarks/decode_host_time.py --cuda [--length 16384,65536,1048576] [--direct] [--replayed]
                                          [--json OUT.json]
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import pstats
import time
from unittest import mock

import torch
import triton
from slkernels import SuperlinearConfig, decode_graphs, superlinear_attention, triton_backend
from slkernels.api import _BACKENDS, available_backends
from slkernels.triton_ops import decode, search


class _NoLaunch:
    """Stands in for a Triton kernel: `kernel[grid](*args)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **meta: None


def stub_kernels() -> None:
    """The decode path as on a GPU (no interpreter), its three kernels replaced by no-ops, the backend usable."""
    available_backends()  # the real backends register now, not over the stub at the first call
    decode.interpreting = search.interpreting = lambda: False
    decode._decode_partial_kernel = decode._decode_combine_kernel = search._search_kernel = _NoLaunch()
    _BACKENDS["triton"] = (triton_backend.triton_attention, lambda inputs: True)


class _TimedLaunch:
    """Wraps a Triton kernel: `kernel[grid](*args)` launches it and adds the launch's host time to `seconds`."""

    def __init__(self, kernel):
        self.kernel, self.seconds, self.calls = kernel, 0.0, 0

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def timed(*args, **meta):
            start = time.perf_counter()
            result = launch(*args, **meta)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return result

        return timed


class _DirectLaunch:
    """Wraps a Triton kernel: a launch whose every argument (ints and floats by value, tensors by dtype and 16-byte
    alignment, the launch options) equals an earlier one's goes straight to the compiled kernel that the earlier
    launch returned, with all the kernel's arguments in order, constexprs included, as `JITFunction.run` passes
    them; any other launch goes through the kernel as usual. Exact values make the key finer than Triton's own
    specialization, so a compiled kernel is never reused where Triton would pick another."""

    OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")

    def __init__(self, kernel):
        self.kernel, self.compiled, self.direct, self.calls = kernel, {}, 0, 0
        params = inspect.signature(kernel.fn).parameters
        self.names = list(params)
        self.defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}

    @staticmethod
    def _spec(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", value.dtype, value.device, value.data_ptr() % 16 == 0)
        return (type(value), value)

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.calls += 1
            options = {k: meta.pop(k) for k in self.OPTIONS if k in meta}
            values = args + tuple(meta[n] if n in meta else self.defaults[n] for n in self.names[len(args):])
            key = (tuple(sorted(options.items())), *map(self._spec, values))
            compiled = self.compiled.get(key)
            if compiled is None:
                compiled = self.kernel[grid](*args, **meta, **options)
                if compiled is not None and hasattr(compiled, "__getitem__"):
                    self.compiled[key] = compiled
                return compiled
            self.direct += 1
            compiled[tuple(grid) + (1,) * (3 - len(grid))](*values)
            return compiled

        return launch


KERNELS = {"search": (search, "_search_kernel"), "decode partial": (decode, "_decode_partial_kernel"),
           "decode combine": (decode, "_decode_combine_kernel")}


def _wrapped(wrappers: dict, step):
    """Runs `step()` with each kernel of KERNELS replaced by its wrapper in `wrappers`, then puts them back."""
    for name, (module, attr) in KERNELS.items():
        setattr(module, attr, wrappers[name])
    try:
        return step()
    finally:
        for name, (module, attr) in KERNELS.items():
            setattr(module, attr, wrappers[name].kernel)


def seconds_per_call(step, calls: int, sync: str = "none") -> float:
    """Wall time of `step()` per call over `calls` calls. sync: "none" (CPU work only), "each" (the GPU finishes
    every call before the next starts), "end" (calls back to back; the clock stops when the GPU has finished them
    all) or "after" (the clock stops when the host has issued them all; the GPU is then waited for)."""
    start = time.perf_counter()
    for _ in range(calls):
        step()
        if sync == "each":
            torch.cuda.synchronize()
    if sync == "end":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if sync == "after":
        torch.cuda.synchronize()
    return seconds / calls


def cuda_step_times(length: int, calls: int, profile: bool = False, direct: bool = False,
                    replayed: bool = False) -> dict:
    """On a GPU: one decode row at LENGTH keys, the real kernels. Microseconds per step: eager with a
    synchronisation after each call, eager back to back (host and GPU overlap), CUDA-graph replay; and the host
    time of each kernel's launch against the whole call's. The eager rows launch the kernels on every call
    (GRAPH_DECODE off); `replayed` adds the step replayed from a CUDA graph, as a static cache runs it with
    GRAPH_DECODE on."""
    with mock.patch.object(decode_graphs, "GRAPH_DECODE", False):
        return _cuda_step_times(length, calls, profile, direct, replayed)


def _cuda_step_times(length: int, calls: int, profile: bool, direct: bool, replayed: bool) -> dict:
    cfg = SuperlinearConfig.released()
    dev, dt = torch.device("cuda"), torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)
    q, qs = (torch.randn(1, 32, 1, 128, device=dev, dtype=dt, generator=gen) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device=dev, dtype=dt, generator=gen) for _ in range(2))
    positions = torch.tensor([length - 1], device=dev)

    def call():
        return superlinear_attention(q, k, v, qs, cfg, cache_position=positions, backend="triton",
                                     check_values=False)

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    synced = seconds_per_call(call, calls, sync="each")
    back_to_back = seconds_per_call(call, calls, sync="end")
    timed = {name: _TimedLaunch(getattr(module, attr)) for name, (module, attr) in KERNELS.items()}
    # the host's time alone: the clock stops first
    host = _wrapped(timed, lambda: seconds_per_call(call, calls, sync="after"))
    row = {}
    if direct:
        reference = call().clone()
        fast = {name: _DirectLaunch(getattr(module, attr)) for name, (module, attr) in KERNELS.items()}

        def direct_step():
            first = call()  # each kernel's first launch goes through Triton and keeps its compiled kernel
            torch.cuda.synchronize()
            same = bool(torch.equal(call(), reference) and torch.equal(first, reference))
            return {"direct_same_output": same,
                    "direct_eager_synced_us": seconds_per_call(call, calls, sync="each") * 1e6,
                    "direct_eager_back_to_back_us": seconds_per_call(call, calls, sync="end") * 1e6,
                    "direct_host_per_call_us": seconds_per_call(call, calls, sync="after") * 1e6}

        try:
            row = _wrapped(fast, direct_step)
        except Exception as err:  # a Triton whose compiled kernels launch otherwise: say so, keep the other rows
            row = {"direct_error": f"{type(err).__name__}: {err}"}
        row["direct_launches"] = {name: f"{w.direct} of {w.calls}" for name, w in fast.items()}
    if replayed:
        reference = call().clone()
        with mock.patch.object(decode_graphs, "GRAPH_DECODE", True):
            outs = [call() for _ in range(3)]  # eager, then captured and replayed, then replayed
            torch.cuda.synchronize()
            row.update({"replayed_same_output": all(bool(torch.equal(out, reference)) for out in outs),
                        "replayed_eager_synced_us": seconds_per_call(call, calls, sync="each") * 1e6,
                        "replayed_eager_back_to_back_us": seconds_per_call(call, calls, sync="end") * 1e6,
                        "replayed_host_per_call_us": seconds_per_call(call, calls, sync="after") * 1e6})
            if profile:
                _profile(call, calls, f"{length} keys, {calls} eager calls replayed from a CUDA graph:")
    if profile:  # where the eager call's host time goes, the launches' insides included
        _profile(call, calls, f"{length} keys, {calls} eager calls:")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        call()
    graph.replay()
    torch.cuda.synchronize()
    replay = seconds_per_call(graph.replay, calls, sync="end")
    launches = {name: t.seconds / max(t.calls, 1) * 1e6 for name, t in timed.items()}
    return {"length": length, "eager_synced_us": synced * 1e6, "eager_back_to_back_us": back_to_back * 1e6,
            "graph_replay_us": replay * 1e6, "host_per_call_us": host * 1e6, "launch_host_us": launches,
            "host_besides_launches_us": host * 1e6 - sum(launches.values()), **row}


def _profile(call, calls: int, title: str) -> None:
    prof = cProfile.Profile()
    prof.runcall(lambda: [call() for _ in range(calls)])
    torch.cuda.synchronize()
    print(title)
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", default="65536", help="keys in the cache; with --cuda a comma-separated list")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="also print the functions that take the time")
    parser.add_argument("--cuda", action="store_true", help="run the real kernels on the GPU (see above)")
    parser.add_argument("--json", default=None, help="with --cuda: also write the rows to this JSON file")
    parser.add_argument("--direct", action="store_true",
                        help="with --cuda: also time the step with each kernel launched through its compiled kernel")
    parser.add_argument("--replayed", action="store_true",
                        help="with --cuda: also time the eager step replayed from a CUDA graph (GRAPH_DECODE on)")
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.length.split(",")]
    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("error: --cuda needs a CUDA GPU; leave it out to time the host work with stubbed kernels")
        rows = []
        for length in lengths:
            row = cuda_step_times(length, args.calls, args.profile, args.direct, args.replayed)
            rows.append(row)
            launches = ", ".join(f"{name} {us:.1f}" for name, us in row["launch_host_us"].items())
            print(f"{length} keys: eager {row['eager_synced_us']:.1f} us synced, {row['eager_back_to_back_us']:.1f} "
                  f"back to back, graph replay {row['graph_replay_us']:.1f}; host {row['host_per_call_us']:.1f} per "
                  f"call = launches ({launches}) + {row['host_besides_launches_us']:.1f} besides", flush=True)
            if args.direct and "direct_error" in row:
                print(f"  launched directly: failed ({row['direct_error']})", flush=True)
            elif args.direct:
                print(f"  launched directly: eager {row['direct_eager_synced_us']:.1f} us synced, "
                      f"{row['direct_eager_back_to_back_us']:.1f} back to back; host "
                      f"{row['direct_host_per_call_us']:.1f} per call; same output: {row['direct_same_output']}; "
                      f"direct launches {row['direct_launches']}", flush=True)
            if args.replayed:
                print(f"  replayed from a graph: eager {row['replayed_eager_synced_us']:.1f} us synced, "
                      f"{row['replayed_eager_back_to_back_us']:.1f} back to back; host "
                      f"{row['replayed_host_per_call_us']:.1f} per call; same output: {row['replayed_same_output']}",
                      flush=True)
        if args.json:
            card = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
            with open(args.json, "w") as f:
                json.dump({"environment": card, "calls": args.calls, "rows": rows}, f, indent=2)
        return
    stub_kernels()
    cfg = SuperlinearConfig.released()
    length = lengths[0]
    q, qs = torch.randn(1, 32, 1, 128), torch.randn(1, 32, 1, 128)
    k = torch.randn(1, 2, 1, 128).expand(1, 2, length, 128)  # only the shape is read
    positions, first_real = torch.tensor([length - 1]), torch.zeros(1, dtype=torch.int64)
    calls = {
        "superlinear_attention (public call)": lambda: superlinear_attention(
            q, k, k, qs, cfg, cache_position=positions, backend="triton"),
        "superlinear_decode (backend call)": lambda: decode.superlinear_decode(
            q, k, k, qs, cfg, positions, first_real, 128 ** -0.5),
    }
    for name, call in calls.items():
        call()  # builds the tables
        print(f"{name}: {seconds_per_call(call, args.calls) * 1e6:.1f} us per call, kernels stubbed, {length} keys")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [calls["superlinear_attention (public call)"]() for _ in range(500)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
