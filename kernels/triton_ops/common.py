"""Shared launch settings of the Triton kernels.

The same kernels run compiled on a GPU and under ``TRITON_INTERPRET=1`` on the CPU (CI). The interpreter
cannot run a bf16 ``tl.dot`` and is ~70x slower than torch, so under it operands are upcast to float32
and tiles are small; on the GPU, float32 inputs use exact ("ieee") products so that router scores rank
candidates exactly like the float32 reference does.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["interpreting", "dot_precision", "tile_sizes", "launch_tiles", "rows_flat", "entry_rows", "span_range",
           "SUPPORTED_HEAD_DIMS", "NEG_BIG"]

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
# Finite "minus infinity" of logits and log-sum-exps: a fully masked row must stay finite (docs/semantics.md).
NEG_BIG = -1.0e30


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (read at decoration time by Triton itself)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


# (entries per tile, keys per tile, warps, pipeline stages[, register cap]) of each pass for D <= 128, keyed by
# the entry kernel's mode (0 window forward, 1 span forward, 2 delta, 3 dq, 4 fused span dq) or "dkdv".
# Measured on an H200 (benchmarks/NOTES.md). The fused span dq pass holds two [entries x D] float32
# accumulators: half-width key blocks leave registers for them (544 ms backward at 256K against 655 with
# 8 warps x 64 keys).
TILES_D128: dict[int | str, tuple[int, ...]] = {
    0: (64, 64, 4, 3),
    1: (64, 64, 4, 3),
    2: (64, 64, 4, 3),
    3: (64, 64, 4, 2),  # two stages fit two programs per SM in shared memory (three: one; 8.1 -> 6.1 ms at 64K)
    4: (64, 32, 4, 3),
    "dkdv": (64, 64, 4, 3),
}


def tile_sizes(head_dim: int, mode: int | str = 0) -> tuple[int, ...]:
    """Launch tiling of one pass (`TILES_D128`); D = 256 holds twice the registers per row: 32-key blocks, 8 warps."""
    if interpreting():
        return 16, 16, 1, 1
    if head_dim > 128:
        return 64, 32, 8, 1
    return TILES_D128[mode]


def launch_tiles(tiles: tuple[int, ...] | None, head_dim: int, mode: int | str) -> tuple[int, int, dict]:
    """(entries per tile, keys per tile, launch options) from `tiles` or the pass's default; a fifth entry is a
    register cap, which lets more programs share an SM."""
    block_m, block_n, warps, stages, *cap = tiles or tile_sizes(head_dim, mode)
    options = dict(num_warps=warps, num_stages=stages)
    if cap and cap[0]:
        options["maxnreg"] = cap[0]
    return block_m, block_n, options


def rows_flat(t: torch.Tensor) -> bool:
    """True when row (b, h, r) of a [B, H, L, D] tensor sits at ``((b * H + h) * L + r) * t.stride(2)``, so the
    kernels address gathered rows by their flat index alone (no division by L or H per row)."""
    batch, heads, length, _ = t.shape
    row = t.stride(2)
    return (heads == 1 or t.stride(1) == length * row) and (batch == 1 or t.stride(0) == heads * length * row)


@triton.jit
def entry_rows(ent, b, Q, sqb, sqh, sql, sqd, offs_d, H_Q, L_Q, NJ: tl.constexpr, Q_ROWS: tl.constexpr):
    """Flat entry index ((b * H_q + h) * L_q + r) * NJ + j -> (query row pointers [BM, D], row index, entry index).

    The row index addresses the kernels' own contiguous [B, H_q, L_q, ...] buffers; with `Q_ROWS` the query
    too (its rows are flat), otherwise its strides are applied to (b, h, r) recovered by division."""
    row = ent // NJ
    row64 = row.to(tl.int64)
    if Q_ROWS:
        q_ptrs = Q + row64[:, None] * sql + offs_d[None, :] * sqd
    else:
        r = (row % L_Q).to(tl.int64)
        h = ((row // L_Q) % H_Q).to(tl.int64)
        q_ptrs = Q + b.to(tl.int64) * sqb + h[:, None] * sqh + r[:, None] * sql + offs_d[None, :] * sqd
    return q_ptrs, row64, ent.to(tl.int64)


@triton.jit
def span_range(anchor, back, fwd, s0, pos, width):
    """Inclusive key range [lo, hi] of the span `anchor` opens, for a query at `pos` with first real key `s0`.

    The kernels' copy of `slkernels.geometry.span_bounds` (docs/semantics.md): ``back``/``fwd`` are that row's
    entries of the host tables (``ceil(b_b t^rho)``, ``ceil(b_f t^rho)``) and ``width`` is W. Arguments broadcast.
    Every kernel that needs a span's keys (search, span lists, decode, gate backward) takes them from here."""
    return tl.maximum(anchor - back, s0), tl.minimum(anchor + fwd, pos - width)
