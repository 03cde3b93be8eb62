"""Compile the kept sums' six kernels (and the whole build's variants) for Hopper (sm_90) on the CPU, with the
specialisation of a 1M-key update (B=1, 2 KV heads, D=128): Triton accepts their types and branches. No GPU needed.
Usage, from the repository root: python benchmarks/results/update-kernels-2026-12-06/compile_sm90.py"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/, for sass_report
from sass_report import compile_for_sm90
from slkernels.triton_ops import prefix as P

D, L, G = 128, 1 << 20, 2
nb = L // 128
nt = (nb + 63) // 64
cases = [
    (P._tile_scan_kernel, dict(SUMS="*fp32", W_SUMS="*fp32", KEPT="*fp32", KEPT_W="*fp32", KEPT_COUNTS="*i32",
                               LOCAL="*fp64", TILE_SUMS="*fp64", FIRST_CHANGED="*i32", L=L, n_blocks=nb,
                               kept_blocks=nb + 1000, n_tiles=nt),
     dict(D=D, BS=128, DC=32, T=64, COMPARE=True), 4),
    (P._tiles_kernel, dict(TILE_SUMS="*fp64", TILE_OFF="*fp64", CENTER="*fp32", FIRST="*i64", H=2, L=L, n_tiles=nt),
     dict(D=D, DC=32, NT=64, MASK=True), 4),
    (P._bound_kernel, dict(LOCAL="*fp64", TILE_OFF="*fp64", ABS_SUMS="*fp32", CENTER0="*fp32", CENTER1="*fp32",
                           FIRST="*i64", BOUND="*fp32", H=2, L=L, n_blocks=nb, n_tiles=nt, groups=G),
     dict(D=D, BS=128, DC=32, T=64, NC=2), 4),
    (P._choose_kernel, dict(BOUND="*fp32", SCALE="*fp32", FIRST="*i64", CENTER="*fp32", NEW_CENTER="*fp32",
                            KEPT_FIRST="*i64", FIRST_CHANGED="*i32", COUNTS="*i32", START="*i32", H=2, groups=G,
                            n_tiles=nt, n_blocks=nb, kept_blocks=nb + 1000),
     dict(D=D, DC=32, NT=64, KEEP=True), 1),
    (P._choose_kernel, dict(BOUND="*fp32", SCALE="*fp32", FIRST="*i64", CENTER="*fp32", NEW_CENTER="*fp32",
                            KEPT_FIRST="*fp32", FIRST_CHANGED="*fp32", COUNTS="*fp32", START="*fp32", H=2, groups=G,
                            n_tiles=nt, n_blocks=nb, kept_blocks=nb),
     dict(D=1, DC=1, NT=64, KEEP=False), 1),
]
for some in (True, False):
    cases.append((P._scan_kernel, dict(X="*bf16", FIRST="*i64", LOCAL="*fp64", TILE_OFF="*fp64", CENTER="*fp32",
                                       SCALE="*fp32", OUT="*fp16", NORM="*fp32", THIRD="*fp16", START="*i32",
                                       DIRTY="*i8", norm_slack=P.NORM_SLACK, sxb=G * L * D, sxh=L * D, sxl=D, sxd=1,
                                       H=2, L=L, ROWS=L + 1000, n_blocks=nb, n_tiles=nt),
                  dict(D=D, BS=128, DC=32, T=64, MASK=True, CENTERED=True, PAIRS=True, SOME=some), 4))
for fn, args, consts, warps in cases:
    k = compile_for_sm90(fn, args, consts, warps, 3)
    print(fn.fn.__name__, {n: consts[n] for n in ("KEEP", "SOME", "COMPARE", "NC") if n in consts},
          "compiled, shared memory", k.metadata.shared, "bytes")
