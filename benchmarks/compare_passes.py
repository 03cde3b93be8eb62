"""Same-run comparisons of pass variants (CUDA events, median of 5 runs), for benchmarks/NOTES.md.

    python benchmarks/compare_passes.py [--search-only] [LENGTH ...]     (default 32768 262144)
Times the search and the whole backward with the span dq pass fused (DQ_SPAN) and as two walks
(DELTA + DQ), and the fused pass under several tilings. `--search-only` times just the search, so that
the same script can run against another checkout of `slkernels` (PYTHONPATH) for a before/after.
"""

from __future__ import annotations

import functools
import sys

import profile_passes  # this folder is on sys.path when the script runs
import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn
from slkernels.triton_ops.search import search_topk

timed = functools.partial(profile_passes.timed, reps=5)

FUSED_TILES = [(64, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 3), (128, 64, 8, 2)]


def compare(name: str, cfg: SuperlinearConfig, length: int, search_only: bool) -> None:
    print(f"{name} L={length} on {torch.cuda.get_device_name()}", flush=True)
    q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.arange(length, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5
    timed("search", lambda: search_topk(qs, k, cfg, pos, s0, length))
    if search_only:
        return
    timed("whole forward", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length))
    out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
    grad = torch.randn_like(out)
    timed("whole backward, fused span dq", lambda: fn.backward_pass(grad, q, k, v, qs, saved, scale))
    timed("whole backward, DELTA + DQ walks",
          lambda: fn.backward_pass(grad, q, k, v, qs, saved, scale, fuse_span_dq=False))
    from slkernels.triton_ops import attend

    run = attend.run_entries
    for tiles in FUSED_TILES:
        def patched(mode, *a, tiles=tiles, **kw):
            return run(mode, *a, **kw, tiles=tiles) if mode == attend.MODE_DQ_SPAN else run(mode, *a, **kw)
        fn.run_entries = patched
        timed(f"whole backward, fused tiles {tiles}", lambda: fn.backward_pass(grad, q, k, v, qs, saved, scale))
    fn.run_entries = run


def main() -> None:
    search_only = "--search-only" in sys.argv
    lengths = [int(x) for x in sys.argv[1:] if not x.startswith("--")] or [32768, 262144]
    for length in lengths:
        compare("released", SuperlinearConfig.released(), length, search_only)
    compare("balanced", SuperlinearConfig.balanced(), lengths[-1], search_only=True)


if __name__ == "__main__":
    main()
