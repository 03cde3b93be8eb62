"""The span-table rounding the CPU check found (README): numpy's power against the C library's at t = 3125,
rho = 0.2, what the tables and the brute force give there, and over t <= 2^20 for simple rational span powers
where numpy's power moves ceil(b t^rho) and where the tables (`slkernels.geometry`) differ from `math.pow`.

    python benchmarks/results/fuzz-2026-12-05/span_power_rounding.py > span_power_rounding.log
"""

import math
from fractions import Fraction

import numpy as np
import torch
from slkernels import SuperlinearConfig, select_spans, superlinear_attention
from slkernels.geometry import _span_tables_cpu, span_tables
from slkernels.naive import choose_spans, naive_superlinear_attention

cfg = SuperlinearConfig(sw_index=3, num_spans=1, search_power=0.5, span_power=0.2, backward_factor=1.0,
                        forward_factor=0.0)
print("3125 ** 0.2: math.pow", repr(math.pow(3125, 0.2)), " np.power", repr(np.power(np.arange(3126.0), 0.2)[3125]))
print("ceil(t^rho) at t = 3125: tables", int(span_tables(cfg, 3125).back[3125]), " brute force (math.pow)",
      math.ceil(math.pow(3125, 0.2)))
g = torch.Generator().manual_seed(0)
length = 3125
q = torch.randn(1, 1, 1, 16, generator=g, dtype=torch.float64)
qs = torch.randn(1, 1, 1, 16, generator=g, dtype=torch.float64) * 3
k = torch.randn(1, 1, length, 16, generator=g, dtype=torch.float64)
v = torch.randn(1, 1, length, 16, generator=g, dtype=torch.float64)
sel = select_spans(qs, k, cfg)  # the last row, t = 3125
_, chosen = choose_spans(k[0, 0], qs[0, 0, 0], cfg, length - 1, 0)
print("span of the last row: reference", [int(sel.span_lo[0, 0, 0, 0]), int(sel.span_hi[0, 0, 0, 0])],
      " brute force", [chosen[0][2][0], chosen[0][2][-1]])
got = superlinear_attention(q, k, v, qs, cfg, backend="reference")
print("max |reference - brute force| =", float((got - naive_superlinear_attention(q, k, v, qs, cfg)).abs().max()))

n = 1 << 20
t = np.arange(n + 1, dtype=np.float64)
powers = sorted({float(Fraction(a, b)) for b in range(2, 11) for a in range(1, b)} | {0.55, 0.45, 0.65, 0.35})
numpy_moves, table_moves = [], []
for rho in powers:
    libm = np.array([math.pow(x, rho) for x in range(n + 1)])
    fast = np.power(t, rho)
    for b in (0.5, 1.0, 2.0, 3.0):
        want = np.ceil(b * libm).astype(np.int64)
        numpy_moves += [(rho, b, int(x)) for x in np.flatnonzero(np.ceil(b * fast) != want)]
        table_moves += [(rho, b, int(x)) for x in np.flatnonzero(_span_tables_cpu(rho, b, 0.0, n).back.numpy() != want)]
print(f"{len(powers)} span powers x 4 factors, t <= 2^20: numpy's power moves ceil(b t^rho) at {numpy_moves};"
      f" the tables differ from math.pow at {table_moves or 'no t'}")
