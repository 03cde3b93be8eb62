"""Host time of one decode step with the Triton kernels stubbed out: what an eager call costs the CPU besides the
GPU's work (Python, argument checks, table lookups, torch operations on CPU tensors; not the launches themselves).

Called eagerly, as transformers' `generate` calls it, a decode step is bound by its host time once that exceeds
the GPU's (0.07 ms at 16K as a CUDA-graph replay on an H200, benchmarks/NOTES.md item 15). Runs on any machine:

    python benchmarks/decode_host_time.py [--length 65536] [--calls 2000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
from slkernels import SuperlinearConfig, superlinear_attention, triton_backend
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=65536, help="keys in the cache")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="also print the functions that take the time")
    args = parser.parse_args(argv)
    stub_kernels()
    cfg = SuperlinearConfig.released()
    q, qs = torch.randn(1, 32, 1, 128), torch.randn(1, 32, 1, 128)
    k = torch.randn(1, 2, 1, 128).expand(1, 2, args.length, 128)  # only the shape is read
    positions, first_real = torch.tensor([args.length - 1]), torch.zeros(1, dtype=torch.int64)
    calls = {
        "superlinear_attention (public call)": lambda: superlinear_attention(
            q, k, k, qs, cfg, cache_position=positions, backend="triton"),
        "superlinear_decode (backend call)": lambda: decode.superlinear_decode(
            q, k, k, qs, cfg, positions, first_real, 128 ** -0.5),
    }
    for name, call in calls.items():
        call()  # builds the tables
        start = time.perf_counter()
        for _ in range(args.calls):
            call()
        print(f"{name}: {(time.perf_counter() - start) / args.calls * 1e6:.1f} us per call, kernels stubbed, "
              f"{args.length} keys")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [calls["superlinear_attention (public call)"]() for _ in range(500)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
