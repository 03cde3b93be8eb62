"""Shared launch settings of the Triton kernels.

The same kernels run compiled on a GPU and under ``TRITON_INTERPRET=1`` on the CPU (CI). The interpreter
cannot run a bf16 ``tl.dot`` and is ~70x slower than torch, so under it operands are upcast to float32
and tiles are small; on the GPU, float32 inputs use exact ("ieee") products so that router scores rank
candidates exactly like the float32 reference does.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

__all__ = ["interpreting", "capability", "sm_count", "dot_precision", "tile_sizes", "launch_tiles", "rows_flat", "entry_rows", "span_range",
           "SUPPORTED_HEAD_DIMS", "NEG_BIG", "LOG2E", "LN2", "MODE_FWD_WINDOW", "MODE_FWD_SPAN", "MODE_DELTA",
           "MODE_DQ", "MODE_DQ_SPAN", "mode_value"]

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)

# The kernels' constants, each defined here only. Created as `tl.constexpr`, they are read inside jitted code as
# module globals (compile-time values); host code reads `.value`.
# Finite "minus infinity" of logits and log-sum-exps: a fully masked row must stay finite (docs/semantics.md).
NEG_BIG = tl.constexpr(-1.0e30)
# log2(e) and ln(2): the softmaxes run in base 2, exp(x) = exp2(x * LOG2E) and ln(x) = log2(x) * LN2.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# Modes of the entry kernel (attend.py), which are also the keys of its tile table below.
MODE_FWD_WINDOW = tl.constexpr(0)  # window forward, mixing in the row's spans
MODE_FWD_SPAN = tl.constexpr(1)  # span forward
MODE_DELTA = tl.constexpr(2)  # backward: dOut . o_s per span
MODE_DQ = tl.constexpr(3)  # backward: dq
MODE_DQ_SPAN = tl.constexpr(4)  # backward: a span's dq and its gate's gradient in one walk


def cdiv(a: int, b: int) -> int:
    """Ceiling division of host integers (triton.cdiv costs microseconds a call, on every decode step)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), for host integers (as triton.next_power_of_2, without its cost)."""
    return 1 << (n - 1).bit_length()


@functools.cache
def capability(device: torch.device) -> tuple[int, int]:
    """A CUDA device's compute capability (cached: torch's query costs tens of microseconds of host time, and every
    forward asks which kernels the device takes)."""
    return torch.cuda.get_device_capability(device)


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (what grids are sized against; cached: a decode step asks on the
    host every step)."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (read at decoration time by Triton itself)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


# (entries per tile, keys per tile, warps, pipeline stages[, register cap]) of each pass for D <= 128, keyed by
# the entry kernel's mode (`MODE_*`) or "dkdv".
# Measured on an H200 (benchmarks/NOTES.md). The fused span dq pass holds two [entries x D] float32
# accumulators: half-width key blocks leave registers for them (544 ms backward at 256K against 655 with
# 8 warps x 64 keys).
TILES_D128: dict[int | str, tuple[int, ...]] = {
    MODE_FWD_WINDOW.value: (64, 64, 4, 3),
    MODE_FWD_SPAN.value: (64, 64, 4, 3),
    MODE_DELTA.value: (64, 64, 4, 3),
    MODE_DQ.value: (64, 64, 4, 2),  # two stages fit two programs per SM in shared memory (three: one; 8.1 -> 6.1 ms at 64K)
    MODE_DQ_SPAN.value: (64, 32, 4, 3),
    "dkdv": (64, 64, 4, 3),
}


def mode_value(mode) -> int | str:
    """A pass's key as a plain Python value: a `MODE_*` constant (or its int) gives its int, "dkdv" itself."""
    return mode.value if isinstance(mode, tl.constexpr) else mode


def tile_sizes(head_dim: int, mode=MODE_FWD_WINDOW) -> tuple[int, ...]:
    """Launch tiling of one pass (`TILES_D128`); D = 256 holds twice the registers per row: 32-key blocks, 8 warps."""
    if interpreting():
        return 16, 16, 1, 1
    if head_dim > 128:
        return 64, 32, 8, 1
    return TILES_D128[mode_value(mode)]


def launch_tiles(tiles: tuple[int, ...] | None, head_dim: int, mode) -> tuple[int, int, dict]:
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
def entry_rows(ent, b, sqb, sqh, sql, sqd, offs_d, H_Q, L_Q, NJ: tl.constexpr, Q_ROWS: tl.constexpr):
    """Flat entry index ((b * H_q + h) * L_q + r) * NJ + j -> (offsets of the query rows' elements [BM, D], row
    index, entry index).

    The row index addresses the kernels' own contiguous [B, H_q, L_q, ...] buffers; with `Q_ROWS` the query
    too (its rows are flat), otherwise its strides are applied to (b, h, r) recovered by division. The offsets
    also address any tensor of the query's shape and strides (the window forward's output, `attend.run_entries`)."""
    row = ent // NJ
    row64 = row.to(tl.int64)
    if Q_ROWS:
        q_off = row64[:, None] * sql + offs_d[None, :] * sqd
    else:
        r = (row % L_Q).to(tl.int64)
        h = ((row // L_Q) % H_Q).to(tl.int64)
        q_off = b.to(tl.int64) * sqb + h[:, None] * sqh + r[:, None] * sql + offs_d[None, :] * sqd
    return q_off, row64, ent.to(tl.int64)


@triton.jit
def span_range(anchor, back, fwd, s0, pos, width):
    """Inclusive key range [lo, hi] of the span `anchor` opens, for a query at `pos` with first real key `s0`.

    The kernels' copy of `slkernels.geometry.span_bounds` (docs/semantics.md): ``back``/``fwd`` are that row's
    entries of the host tables (``ceil(b_b t^rho)``, ``ceil(b_f t^rho)``) and ``width`` is W. Arguments broadcast.
    Every kernel that needs a span's keys (search, span lists, decode, gate backward) takes them from here."""
    return tl.maximum(anchor - back, s0), tl.minimum(anchor + fwd, pos - width)
