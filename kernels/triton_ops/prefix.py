"""Running sums of the keys for the "span_mean" search key, built on the device.

The router scores a candidate anchor by ``q_search . mean(k[lo .. hi])`` over the key range of the span it opens
(docs/semantics.md). With running sums ``P[x] = sum_{y < x} k[y]`` that mean is ``(P[hi + 1] - P[lo]) / n``: two
rows per candidate whatever the span's length, the identity the reference uses with float64 sums
(`slkernels.selection.key_prefix_sums`). The kernels use it with the sums built here.

Precision: blocked float32 with float64 block offsets, chosen over a float64 cumsum. The search gathers two rows of
these sums per candidate, where the anchor key gathers one 16-bit row, so their width is the search's memory traffic
and their format its instruction count; float64 rows would be eight times the anchor's bytes. Nothing is accumulated
in low precision over more than one block:

- keys are taken relative to ``center``, their mean over the real tokens of that (batch row, kv head); padding
  keys (before the first real token) count as zero. The sums then grow with the keys' fluctuation around their
  mean rather than with t times it (the keys of a trained layer share a large common part); the search adds
  ``q_search . center`` back to each score and the gate backward ``center`` back to each mean;
- each block of keys is summed and scanned in float32 (at most one block of terms), the block totals are carried
  along the sequence in float64 (scanned within tiles of blocks, a program each, then the tiles' totals, a program
  per group: no program walks the blocks in series), uncentred: a block's offset is their sum less the real keys
  before it times the centre;
- each value is stored once, as two float16 parts ``hi + lo`` of ``scale * sum`` (22 significant bits, four bytes
  like one float32; ``scale``, a power of two per (batch row, kv head), keeps the sums within float16's range),
  and a third float16 part ``scale * sum - hi - lo`` in an array of its own (33 bits in all). The search multiplies
  ``hi`` and ``lo`` with q_search in 16-bit tensor-core products accumulated in float32: no per-candidate
  conversion of a float32 row, which would cost more instructions per candidate than the anchor key's whole
  search. ``norm`` holds, per row, a bound on the row's L2 norm: from it the search bounds how far a score from
  those products can be from the exact one, and scores the candidates where that could change the selection
  again from all three parts (`search.py`); the gate backward takes its span means from all three parts too.

A span mean from ``hi + lo`` carries an error of about ``2^-22 (|P[hi + 1]| + |P[lo]|) / n`` with P the centred
sums; from all three parts the float32 scan of a block is what is left. `tests/test_triton_interpret.py` holds the
three-part means under 1e-3 (relative: the norm of the error over the norm of the mean) at 1M tokens on bf16 keys
with a common mean four times their spread, for spans of 1 to 8000 keys, with a block 32 times longer than the
GPU's (a longer block only adds float32 error), where a plain float32 cumsum of the same keys is off by 3e-2.

The backward's sums of per-key gradient differences use the same scan, stored in float32 (`prefix_sums`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .common import interpreting

__all__ = ["KeyPrefix", "KeySums", "key_prefix", "prefix_sums"]

# Keys per block on a GPU: the float32 part of every sum covers at most this many terms.
BLOCK = 128
# Blocks per program of the kernels over block totals (their float64 scan within the tile and compare with the kept
# ones, the bounds) on a GPU; also how many tiles a program per group (`_tiles_kernel`, `_choose_kernel`) reads at once.
TILE = 64
# Columns and warps of a block-totals program on a GPU (its whole block, these many columns at a time). Wider programs
# read K faster: 1M keys on an H100, 0.38 ms at 32 columns and 4 warps, 0.27 at 128, 0.19 at 128 with 2 warps
# (`benchmarks/results/kept-sums-update-2026-12-06/`). They add each column's keys in another order than 32 columns
# do; the search selected the same spans as float64 with both on 3 draws x 1024 rows x 32 heads at 256K, and the
# span-mean GPU tests pass with these (`benchmarks/results/kept-sums-shipped-2026-12-06/`).
TOTALS_COLUMNS = 128
TOTALS_WARPS = 2
# The sums times `scale` stay below 2**FP16_EXP (float16 holds up to 65504 = 2**16 - 32).
FP16_EXP = tl.constexpr(14)
# `KeyPrefix.norm` is each row's L2 norm times this: an upper bound despite float32 rounding (a chunk's sum of at most
# 32 squares, then the sum over at most 16 chunks: under 2^-18 relative).
NORM_SLACK = 1.0 + 2.0**-16
# A tile's first changed block where none changed (`_tile_scan_kernel`): past any block.
UNCHANGED = tl.constexpr(1 << 30)


@dataclass
class KeyPrefix:
    """Centred running sums of the keys of one attention call (module docstring)."""

    pairs: torch.Tensor  # float16 [B, H_kv, L_kv + 1, 2, D], contiguous: hi and lo of scale * P[x]
    scale: torch.Tensor  # float32 [B, H_kv]: a power of two
    center: torch.Tensor  # float32 [B, H_kv, D]: mean of the real keys (zeros for a row without one)
    norm: torch.Tensor  # float32 [B, H_kv, L_kv + 1], contiguous: |hi[x] + lo[x]| times NORM_SLACK (an upper bound)
    third: torch.Tensor  # float16 [B, H_kv, L_kv + 1, D], contiguous: scale * P[x] - hi - lo (exact searches only)

    def sums(self) -> torch.Tensor:
        """P (float64 [B, H_kv, L_kv + 1, D]): sum over real keys y < x of (k[y] - center), from all three parts."""
        return (self.pairs.double().sum(dim=3) + self.third.double()) / self.scale.double()[:, :, None, None]


class _Tiling(NamedTuple):
    """How the kernels of this module split the work."""

    block: int  # keys per block: the float32 part of every sum covers at most this many terms
    columns: int  # columns per chunk: a program walks its rows' columns one chunk at a time
    warps: int
    tile: int  # blocks per program of the kernels over block totals; tiles per step of a program per group


class _Offsets(NamedTuple):
    """The float64 sums of the block totals before each block, uncentred, in the two parts the kernels add
    (`_offset`)."""

    local: torch.Tensor  # [groups, n_blocks, D]: from the start of the block's tile
    tiles: torch.Tensor  # [groups, n_tiles, D]: the tiles before it


def _tiling(dim: int, block: int | None) -> _Tiling:
    if interpreting():
        return _Tiling(block or 16, min(dim, 16), 1, 4)
    return _Tiling(block or BLOCK, min(dim, 32), 4, TILE)


@triton.jit
def _load_block(X, FIRST, b, h, blk, dc, sxb, sxh, sxl, sxd, L, BS: tl.constexpr, DC: tl.constexpr,
                MASK: tl.constexpr):
    """Rows [blk * BS, blk * BS + BS) and columns [dc * DC, dc * DC + DC) of x[b, h] in float32, zeros outside the
    sequence and (with MASK) before the first real token; the mask of the kept rows; rows; columns."""
    rows = blk * BS + tl.arange(0, BS)
    cols = dc * DC + tl.arange(0, DC)
    keep = rows < L
    if MASK:
        keep = keep & (rows >= tl.load(FIRST + b))
    ptrs = X + b.to(tl.int64) * sxb + h.to(tl.int64) * sxh + rows.to(tl.int64)[:, None] * sxl + cols[None, :] * sxd
    return tl.load(ptrs, mask=keep[:, None], other=0.0).to(tl.float32), keep, rows, cols


@triton.jit
def _block_sums_kernel(X, FIRST, SUMS, ABS_SUMS, W_SUMS, sxb, sxh, sxl, sxd, H, L, n_blocks,
                       D: tl.constexpr, BS: tl.constexpr, DC: tl.constexpr, MASK: tl.constexpr, ABS: tl.constexpr,
                       WEIGHTED: tl.constexpr):
    """One block of one group, every column (DC at a time): its total, and where asked the total of absolute
    values and the total weighted by each key's place in the block."""
    blk = tl.program_id(0)
    grp = tl.program_id(1)
    for dc in tl.static_range(D // DC):
        x, keep, rows, cols = _load_block(X, FIRST, grp // H, grp % H, blk, dc, sxb, sxh, sxl, sxd, L, BS, DC, MASK)
        out = (grp.to(tl.int64) * n_blocks + blk) * D + cols
        tl.store(SUMS + out, tl.sum(x, axis=0))
        if ABS:
            tl.store(ABS_SUMS + out, tl.sum(tl.abs(x), axis=0))
        if WEIGHTED:  # each row weighted by its place in the block, irregularly: 1 + frac(place * golden ratio)
            place = (tl.arange(0, BS) + 1).to(tl.float32) * 0.6180339887498949
            place = 1.0 + place - tl.floor(place)
            tl.store(W_SUMS + out, tl.sum(x * place[:, None], axis=0))


@triton.jit
def _tile_scan_kernel(SUMS, W_SUMS, KEPT, KEPT_W, KEPT_COUNTS, LOCAL, TILE_SUMS, FIRST_CHANGED, L, n_blocks,
                      kept_blocks, n_tiles, D: tl.constexpr, BS: tl.constexpr, DC: tl.constexpr, T: tl.constexpr,
                      COMPARE: tl.constexpr):
    """One tile of T blocks of one group: the float64 sum of the block totals before each block from the tile's
    start (LOCAL [groups, n_blocks, D]) and the tile's total (TILE_SUMS [groups, n_tiles, D]). With COMPARE, each
    block's totals and key count against the kept ones (KEPT, KEPT_W [groups, kept_blocks, D], KEPT_COUNTS [groups,
    kept_blocks]), which are then replaced by these: FIRST_CHANGED (int32 [groups, n_tiles]) holds the tile's first
    block that differs, or UNCHANGED."""
    tile = tl.program_id(0)
    grp = tl.program_id(1)
    blks = tile * T + tl.arange(0, T)
    inside = blks < n_blocks
    rows = grp.to(tl.int64) * n_blocks + blks
    kept_rows = grp.to(tl.int64) * kept_blocks + blks
    changed = tl.zeros([T], tl.int32)
    for dc in tl.static_range(D // DC):
        cols = dc * DC + tl.arange(0, DC)
        at = rows[:, None] * D + cols[None, :]
        s = tl.load(SUMS + at, mask=inside[:, None], other=0.0)
        x = s.to(tl.float64)
        tl.store(LOCAL + at, tl.cumsum(x, axis=0) - x, mask=inside[:, None])
        tl.store(TILE_SUMS + (grp.to(tl.int64) * n_tiles + tile) * D + cols, tl.sum(x, axis=0))
        if COMPARE:
            kept_at = kept_rows[:, None] * D + cols[None, :]
            w = tl.load(W_SUMS + at, mask=inside[:, None], other=0.0)
            differs = ((s != tl.load(KEPT + kept_at, mask=inside[:, None], other=0.0))
                       | (w != tl.load(KEPT_W + kept_at, mask=inside[:, None], other=0.0)))
            changed = tl.maximum(changed, tl.max(differs.to(tl.int32), axis=1))
            tl.store(KEPT + kept_at, s, mask=inside[:, None])
            tl.store(KEPT_W + kept_at, w, mask=inside[:, None])
    if COMPARE:
        counts = tl.minimum(tl.maximum(L - blks * BS, 0), BS)
        kept = tl.load(KEPT_COUNTS + kept_rows, mask=inside, other=0)
        changed = tl.where(inside & (counts != kept), 1, changed)
        tl.store(KEPT_COUNTS + kept_rows, counts, mask=inside)
        tl.store(FIRST_CHANGED + grp * n_tiles + tile, tl.min(tl.where(changed != 0, blks, UNCHANGED), axis=0))


@triton.jit
def _tiles_kernel(TILE_SUMS, TILE_OFF, CENTER, FIRST, H, L, n_tiles, D: tl.constexpr, DC: tl.constexpr,
                  NT: tl.constexpr, MASK: tl.constexpr):
    """One group's tiles (TILE_SUMS float64 [groups, n_tiles, D], NT at a time): each tile's offset, the sum of the
    totals of the tiles before it (TILE_OFF, same shape), and the mean of the real keys (CENTER float32 [groups, D];
    zeros without one). The offsets are the running sum shifted by one tile, not it less each tile's own total: a
    tile's offset depends on the tiles before it only, so a changed last block cannot move, by a rounding, the
    offsets of the kept blocks beside it."""
    grp = tl.program_id(0)
    real = L
    if MASK:
        real = L - tl.load(FIRST + grp // H)
    count = tl.maximum(real, 1).to(tl.float64)
    base = grp.to(tl.int64) * n_tiles
    for dc in tl.static_range(D // DC):
        cols = dc * DC + tl.arange(0, DC)
        tl.store(TILE_OFF + base * D + cols, tl.zeros([DC], tl.float64))
        run = tl.zeros([DC], tl.float64)
        for start in range(0, n_tiles, NT):
            tiles = start + tl.arange(0, NT)
            x = tl.load(TILE_SUMS + (base + tiles)[:, None] * D + cols[None, :], mask=(tiles < n_tiles)[:, None],
                        other=0.0)
            inclusive = run[None, :] + tl.cumsum(x, axis=0)
            tl.store(TILE_OFF + (base + tiles + 1)[:, None] * D + cols[None, :], inclusive,
                     mask=(tiles + 1 < n_tiles)[:, None])
            last = tl.minimum(n_tiles - start, NT) - 1
            run = tl.sum(tl.where((tl.arange(0, NT) == last)[:, None], inclusive, 0.0), axis=0)
        tl.store(CENTER + grp.to(tl.int64) * D + cols, (run / count).to(tl.float32))


@triton.jit
def _offset(LOCAL, TILE_OFF, grp, blk, n_blocks, n_tiles, cols, mask, D: tl.constexpr, T: tl.constexpr):
    """The float64 sums of the block totals before block `blk` of a group, at columns `cols` (broadcast together:
    [DC] for one block, [T, 1] against [1, DC] for a tile's), zeros outside `mask`: from the tile's start (LOCAL
    [groups, n_blocks, D]) plus the tiles before it (TILE_OFF [groups, n_tiles, D])."""
    at = grp.to(tl.int64) * n_blocks + blk
    tile_at = grp.to(tl.int64) * n_tiles + blk // T
    return (tl.load(LOCAL + at * D + cols, mask=mask, other=0.0)
            + tl.load(TILE_OFF + tile_at * D + cols, mask=mask, other=0.0))


@triton.jit
def _keys_before(blks, first, L, BS: tl.constexpr):
    """Real keys before each block, and in it (float64): centring takes that many times the centre away."""
    start = blks * BS
    before = tl.maximum(tl.minimum(start, L) - first, 0)
    inside = tl.maximum(tl.minimum(start + BS, L) - tl.maximum(start, first), 0)
    return before.to(tl.float64), inside.to(tl.float64)


@triton.jit
def _largest_term(run, spread, center, before, real, inside):
    """The largest |offset - before * centre| + sum |x| + real * |centre| of a tile's blocks (float64 terms, their
    maximum in float32): uncentred offsets `run`, sums of |x| `spread` [T, DC]; keys before and in each block [T]."""
    c = center.to(tl.float64)
    term = tl.abs(run - before[:, None] * c[None, :]) + spread + real[:, None] * tl.abs(c)[None, :]
    return tl.max(tl.where(inside[:, None], term.to(tl.float32), 0.0))


@triton.jit
def _bound_kernel(LOCAL, TILE_OFF, ABS_SUMS, CENTER0, CENTER1, FIRST, BOUND, H, L, n_blocks, n_tiles, groups,
                  D: tl.constexpr, BS: tl.constexpr, DC: tl.constexpr, T: tl.constexpr, NC: tl.constexpr):
    """For each of NC centres (CENTER0, and with NC = 2 CENTER1, float32 [groups, D]), a bound on every centred
    running sum inside one tile of T blocks: |offset| + the block's sum of |x| + its real keys times |centre| (BOUND
    float32 [NC, groups, n_tiles]). Each term is taken in float64 and their maximum in float32 (what `_scale_of`
    reads), which can round it down by 2^-24 of itself: the scale keeps the sums below 2^FP16_EXP, a quarter of
    float16's range."""
    tile = tl.program_id(0)
    grp = tl.program_id(1)
    blks = tile * T + tl.arange(0, T)
    inside = blks < n_blocks
    before, real = _keys_before(blks, tl.load(FIRST + grp // H), L, BS)
    at_row = (grp.to(tl.int64) * n_blocks + blks)[:, None] * D
    worst0 = 0.0
    worst1 = 0.0
    for dc in tl.static_range(D // DC):
        cols = dc * DC + tl.arange(0, DC)
        run = _offset(LOCAL, TILE_OFF, grp, blks[:, None], n_blocks, n_tiles, cols[None, :], inside[:, None], D, T)
        spread = tl.load(ABS_SUMS + at_row + cols[None, :], mask=inside[:, None], other=0.0).to(tl.float64)
        center = tl.load(CENTER0 + grp.to(tl.int64) * D + cols)
        worst0 = tl.maximum(worst0, _largest_term(run, spread, center, before, real, inside))
        if NC == 2:
            center = tl.load(CENTER1 + grp.to(tl.int64) * D + cols)
            worst1 = tl.maximum(worst1, _largest_term(run, spread, center, before, real, inside))
    tl.store(BOUND + grp * n_tiles + tile, worst0)
    if NC == 2:
        tl.store(BOUND + (groups + grp) * n_tiles + tile, worst1)


@triton.jit
def _scale_of(bound):
    """The power of two (float32) that keeps sums bounded by `bound` (float32, >= 0) below 2^FP16_EXP: 2^(FP16_EXP -
    e) with bound < 2^e (e from the bound's exponent bits; 0 for a zero bound, within [-100, 100])."""
    biased = (bound.to(tl.int32, bitcast=True) >> 23) & 0xFF
    exponent = tl.minimum(tl.maximum(tl.where(bound > 0, biased - 126, 0), -100), 100)
    return ((-exponent + (FP16_EXP + 127)) << 23).to(tl.float32, bitcast=True)  # the biased exponent, shifted


@triton.jit
def _largest(X, n, NT: tl.constexpr):
    """The largest of X[0 .. n) (float32, >= 0), NT at a time."""
    worst = 0.0
    for start in range(0, n, NT):
        at = start + tl.arange(0, NT)
        worst = tl.maximum(worst, tl.max(tl.load(X + at, mask=at < n, other=0.0), axis=0))
    return worst


@triton.jit
def _choose_kernel(BOUND, SCALE, FIRST, CENTER, NEW_CENTER, KEPT_FIRST, FIRST_CHANGED, COUNTS, START, H, groups,
                   n_tiles, n_blocks, kept_blocks, D: tl.constexpr, DC: tl.constexpr, NT: tl.constexpr,
                   KEEP: tl.constexpr):
    """One group's centre and scale, from its bounds (BOUND float32 [NC, groups, n_tiles]): the scale of the first
    centre's bound (SCALE float32 [groups]). With KEEP (kept sums: NC = 2, the kept centre CENTER and this call's
    NEW_CENTER, float32 [groups, D]): the group keeps its centre and scale where it was built before with the same
    first real key (KEPT_FIRST int64 [groups], -1 before any build) and the kept centre's bound asks for the kept
    scale; else it takes the new centre and its bound's scale. Written in place (CENTER, SCALE, KEPT_FIRST), with
    START (int32 [groups]): the first block to write, 0 unless the group is kept, else its first changed block
    (FIRST_CHANGED int32 [groups, n_tiles], per tile); and no key counted in the kept blocks past this call's (COUNTS
    int32 [groups, kept_blocks]), so that they count as changed next time."""
    grp = tl.program_id(0)
    at = grp.to(tl.int64)
    scale = _scale_of(_largest(BOUND + at * n_tiles, n_tiles, NT))
    if KEEP:
        first = tl.load(FIRST + grp // H)
        keep = (tl.load(KEPT_FIRST + at) == first) & (tl.load(SCALE + at) == scale)
        if keep:
            start = tl.full([], UNCHANGED, tl.int32)
            for tile in range(0, n_tiles, NT):
                tiles = tile + tl.arange(0, NT)
                changed = tl.load(FIRST_CHANGED + at * n_tiles + tiles, mask=tiles < n_tiles, other=UNCHANGED)
                start = tl.minimum(start, tl.min(changed, axis=0))
        else:
            new = _scale_of(_largest(BOUND + (groups + at) * n_tiles, n_tiles, NT))
            tl.store(SCALE + at, new)
            for dc in tl.static_range(D // DC):
                cols = dc * DC + tl.arange(0, DC)
                tl.store(CENTER + at * D + cols, tl.load(NEW_CENTER + at * D + cols))
            start = tl.full([], 0, tl.int32)
        tl.store(START + at, start)
        tl.store(KEPT_FIRST + at, first)
        for blk in range(n_blocks, kept_blocks, NT):
            blks = blk + tl.arange(0, NT)
            tl.store(COUNTS + at * kept_blocks + blks, tl.zeros([NT], tl.int32), mask=blks < kept_blocks)
    else:
        tl.store(SCALE + at, scale)


@triton.jit
def _scan_kernel(X, FIRST, LOCAL, TILE_OFF, CENTER, SCALE, OUT, NORM, THIRD, START, DIRTY, norm_slack, sxb, sxh, sxl,
                 sxd, H, L, ROWS, n_blocks, n_tiles, D: tl.constexpr, BS: tl.constexpr, DC: tl.constexpr,
                 T: tl.constexpr, MASK: tl.constexpr, CENTERED: tl.constexpr, PAIRS: tl.constexpr,
                 SOME: tl.constexpr):
    blk = tl.program_id(0)
    grp = tl.program_id(1)
    if SOME:  # only the blocks from the group's START on (its first changed block, or 0 where it is built whole)
        dirty = blk >= tl.load(START + grp)
        tl.store(DIRTY + grp.to(tl.int64) * n_blocks + blk, dirty.to(tl.int8))
    else:
        dirty = blk >= 0
    if dirty:
        _scan_block(X, FIRST, LOCAL, TILE_OFF, CENTER, SCALE, OUT, NORM, THIRD, blk, grp, norm_slack, sxb, sxh, sxl,
                    sxd, H, L, ROWS, n_blocks, n_tiles, D, BS, DC, T, MASK, CENTERED, PAIRS)


@triton.jit
def _scan_block(X, FIRST, LOCAL, TILE_OFF, CENTER, SCALE, OUT, NORM, THIRD, blk, grp, norm_slack, sxb, sxh, sxl,
                sxd, H, L, ROWS, n_blocks, n_tiles, D: tl.constexpr, BS: tl.constexpr, DC: tl.constexpr,
                T: tl.constexpr, MASK: tl.constexpr, CENTERED: tl.constexpr, PAIRS: tl.constexpr):
    """Rows blk * BS + 1 .. of the sums of one group, every column (DC at a time): ROWS rows per group in OUT, and
    with PAIRS in THIRD and NORM."""
    if CENTERED:
        before = _keys_before(blk, tl.load(FIRST + grp // H), L, BS)[0]
    share = tl.zeros([BS], tl.float32)  # the squared norm of each row's stored hi + lo, chunk by chunk
    for dc in tl.static_range(D // DC):
        x, keep, rows, cols = _load_block(X, FIRST, grp // H, grp % H, blk, dc, sxb, sxh, sxl, sxd, L, BS, DC, MASK)
        offset = _offset(LOCAL, TILE_OFF, grp, blk, n_blocks, n_tiles, cols, cols < D, D, T)  # every earlier block
        if CENTERED:
            center = tl.load(CENTER + grp.to(tl.int64) * D + cols)
            x = tl.where(keep[:, None], x - center[None, :], 0.0)
            offset = offset - before * center.to(tl.float64)
        inclusive = tl.cumsum(x, axis=0)  # float32 over one block only
        value = inclusive.to(tl.float64) + offset[None, :]
        stored = (rows < L)[:, None]
        if PAIRS:  # row x + 1 of [groups, L + 1, 2, D]: hi, then lo, of scale * value (scale: a power of two)
            value = value * tl.load(SCALE + grp).to(tl.float64)
            hi = value.to(tl.float16)
            rest = value - hi.to(tl.float64)
            lo = rest.to(tl.float16)
            out = OUT + grp.to(tl.int64) * ROWS * (2 * D)
            row_ptr = out + (rows.to(tl.int64) + 1)[:, None] * (2 * D) + cols[None, :]
            tl.store(row_ptr, hi, mask=stored)
            tl.store(row_ptr + D, lo, mask=stored)
            third = THIRD + grp.to(tl.int64) * ROWS * D
            third_ptr = third + (rows.to(tl.int64) + 1)[:, None] * D + cols[None, :]
            tl.store(third_ptr, (rest - lo.to(tl.float64)).to(tl.float16), mask=stored)
            stored32 = hi.to(tl.float32) + lo.to(tl.float32)
            share += tl.sum(stored32 * stored32, axis=1)
            if blk == 0:
                tl.store(out + cols, tl.zeros([DC], tl.float16))
                tl.store(out + D + cols, tl.zeros([DC], tl.float16))
                tl.store(third + cols, tl.zeros([DC], tl.float16))
        else:  # row x + 1 of [groups, L + 1, D] in float32: the one rounding
            out = OUT + grp.to(tl.int64) * ROWS * D
            tl.store(out + (rows.to(tl.int64) + 1)[:, None] * D + cols[None, :], value.to(tl.float32), mask=stored)
            if blk == 0:
                tl.store(out + cols, tl.zeros([DC], tl.float32))
    if PAIRS:  # NORM [groups, ROWS]: each row's norm, rounded up by norm_slack (NORM_SLACK)
        rows = blk * BS + tl.arange(0, BS)
        norm = NORM + grp.to(tl.int64) * ROWS
        tl.store(norm + rows.to(tl.int64) + 1, tl.sqrt_rn(share) * norm_slack, mask=rows < L)
        if blk == 0:
            tl.store(norm, 0.0)


@triton.jit
def span_sum_rows(p_base, t_base, end, start, offs_d, ok, D: tl.constexpr):
    """scale * (P[end] - P[start]) ([len(end), len(offs_d)] float32; zeros where not ok) from the three float16
    parts of the running sums (`KeyPrefix`: pairs [rows, 2, D], third parts [rows, D]), each part subtracted on
    its own, so that every difference rounds relative to itself rather than to |P|."""
    mask = ok[:, None]
    e_ptr = p_base + end[:, None] * (2 * D) + offs_d[None, :]
    s_ptr = p_base + start[:, None] * (2 * D) + offs_d[None, :]
    hi = tl.load(e_ptr, mask=mask, other=0.0).to(tl.float32) - tl.load(s_ptr, mask=mask, other=0.0).to(tl.float32)
    lo = (tl.load(e_ptr + D, mask=mask, other=0.0).to(tl.float32)
          - tl.load(s_ptr + D, mask=mask, other=0.0).to(tl.float32))
    rest = (tl.load(t_base + end[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
            - tl.load(t_base + start[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32))
    return hi + (lo + rest)


def _scan(x: torch.Tensor, first_real: torch.Tensor | None, block: int | None):
    """The scan of the module docstring. With `first_real` (the keys' first real token per batch row): the centred
    float16 pairs [groups, L + 1, 2, D], center float32 [groups, D], scale float32 [groups], bounds of the rows' norms
    float32 [groups, L + 1] and the third parts float16 [groups, L + 1, D]. Without: float32 sums [groups, L + 1, D]
    of every key and None four times."""
    batch, heads, length, dim = x.shape
    tiling = _tiling(dim, block)
    groups, device = batch * heads, x.device
    pairs = first_real is not None
    sums, abs_sums, _ = _block_totals(x, first_real, tiling, absolute=pairs, weighted=False)
    offsets, center, _ = _tile_scan(sums, tiling, first_real, heads, length)
    if pairs:
        scale = torch.empty(groups, dtype=torch.float32, device=device)
        _choose(_bounds(offsets, abs_sums, (center,), first_real, heads, length, tiling), scale, first_real, heads,
                sums.shape[1], tiling)
        out = torch.empty(groups, length + 1, 2, dim, dtype=torch.float16, device=device)
        norm = torch.empty(groups, length + 1, dtype=torch.float32, device=device)
        third = torch.empty(groups, length + 1, dim, dtype=torch.float16, device=device)
    else:
        center = scale = norm = third = None
        out = torch.empty(groups, length + 1, dim, dtype=torch.float32, device=device)
    _launch_scan(x, first_real, offsets, center, scale, out, norm, third, None, tiling, length)
    return out, center, scale, norm, third


def _launch_scan(x, first_real, offsets: _Offsets, center, scale, out, norm, third, some, tiling: _Tiling,
                 length: int) -> None:
    """`_scan_kernel` over every block of x [B, H, L, D]; with pairs (`norm` given) centred on `center` and scaled
    by `scale`; with `some` = (start, dirty), only each group's blocks from its `start` on (`_choose_kernel`), marked
    in `dirty`."""
    heads, dim = x.shape[1], x.shape[3]
    local, tile_off = offsets
    groups, n_blocks = local.shape[:2]
    pairs = norm is not None
    start, dirty = some if some is not None else (local,) * 2  # not read without `some`
    _scan_kernel[(n_blocks, groups)](
        x, _first_or_zero(first_real, x.device), local, tile_off, center if pairs else local,
        scale if pairs else local, out, norm if pairs else out, third if pairs else out, start, dirty, NORM_SLACK,
        *x.stride(), heads, length, out.shape[1], n_blocks, tile_off.shape[1], D=dim,
        BS=tiling.block, DC=tiling.columns, T=tiling.tile,
        MASK=first_real is not None, CENTERED=pairs, PAIRS=pairs, SOME=some is not None, num_warps=tiling.warps)


def _block_totals(x, first_real, tiling: _Tiling, absolute: bool, weighted: bool):
    """Per block of keys of x [B, H, L, D] (padding before `first_real` counted as zero): float32 sums
    [groups, n_blocks, D], and where asked the sums of absolute values and of each key times its place in the
    block (else None)."""
    batch, heads, length, dim = x.shape
    n_blocks = max(1, triton.cdiv(length, tiling.block))
    sums = torch.empty(batch * heads, n_blocks, dim, dtype=torch.float32, device=x.device)
    abs_sums = torch.empty_like(sums) if absolute else None
    w_sums = torch.empty_like(sums) if weighted else None
    columns, warps = (tiling.columns, tiling.warps) if interpreting() else (TOTALS_COLUMNS, TOTALS_WARPS)
    _block_sums_kernel[(n_blocks, batch * heads)](
        x, _first_or_zero(first_real, x.device), sums, sums if abs_sums is None else abs_sums,
        sums if w_sums is None else w_sums, *x.stride(), heads, length, n_blocks, D=dim, BS=tiling.block,
        DC=min(columns, dim), MASK=first_real is not None, ABS=absolute, WEIGHTED=weighted, num_warps=warps)
    return sums, abs_sums, w_sums


def _tile_scan(sums, tiling: _Tiling, first_real, heads: int, length: int, w_sums=None,
               kept: KeySums | None = None):
    """`_tile_scan_kernel` over this call's block totals [groups, n_blocks, D], then `_tiles_kernel` over the tiles'
    totals: the `_Offsets` of every block (uncentred: the scan takes the real keys before a block times the centre
    away itself) and the mean of the real keys (float32 [groups, D]). With `kept` (and this call's weighted totals
    `w_sums`), each block's totals are compared with those it holds, which these replace: then also each tile's first
    changed block (int32 [groups, n_tiles], UNCHANGED where none), else None."""
    groups, n_blocks, dim = sums.shape
    n_tiles = triton.cdiv(n_blocks, tiling.tile)
    local = torch.empty(groups, n_blocks, dim, dtype=torch.float64, device=sums.device)
    tile_sums = torch.empty(groups, n_tiles, dim, dtype=torch.float64, device=sums.device)
    if kept is None:
        w_sums = kept_sums = kept_w = kept_counts = first_changed = sums  # neither read nor written
        kept_blocks = n_blocks
    else:
        kept_sums, kept_w, kept_counts, kept_blocks = kept.sums, kept.w_sums, kept.counts, kept.sums.shape[1]
        first_changed = torch.empty(groups, n_tiles, dtype=torch.int32, device=sums.device)
    _tile_scan_kernel[(n_tiles, groups)](
        sums, w_sums, kept_sums, kept_w, kept_counts, local, tile_sums, first_changed, length, n_blocks,
        kept_blocks, n_tiles, D=dim, BS=tiling.block, DC=tiling.columns, T=tiling.tile, COMPARE=kept is not None,
        num_warps=tiling.warps)
    tile_off = torch.empty_like(tile_sums)
    center = torch.empty(groups, dim, dtype=torch.float32, device=sums.device)
    _tiles_kernel[(groups,)](tile_sums, tile_off, center, _first_or_zero(first_real, sums.device), heads, length,
                             n_tiles, D=dim, DC=tiling.columns, NT=tiling.tile, MASK=first_real is not None,
                             num_warps=tiling.warps)
    return _Offsets(local, tile_off), center, None if kept is None else first_changed


def _bounds(offsets: _Offsets, abs_sums, centers, first_real, heads: int, length: int, tiling: _Tiling):
    """For each centre of `centers` (one or two, float32 [groups, D]), a bound per tile on every centred running sum
    inside its blocks (float32 [NC, groups, n_tiles]): |offset| + sum |x - centre| over the block."""
    local, tile_off = offsets
    groups, n_blocks, dim = local.shape
    n_tiles = tile_off.shape[1]
    bound = torch.empty(len(centers), groups, n_tiles, dtype=torch.float32, device=local.device)
    _bound_kernel[(n_tiles, groups)](
        local, tile_off, abs_sums, centers[0], centers[-1], first_real, bound, heads, length, n_blocks, n_tiles,
        groups, D=dim, BS=tiling.block, DC=tiling.columns, T=tiling.tile, NC=len(centers), num_warps=tiling.warps)
    return bound


def _choose(bound, scale, first_real, heads: int, n_blocks: int, tiling: _Tiling, kept: KeySums | None = None,
            center=None, first_changed=None) -> None:
    """`_choose_kernel`: each group's scale from its bounds (`_bounds`) into `scale` (float32 [groups]); with
    `kept`, the kept centre and scale where they still serve, else this call's `center` and its scale (in the
    `kept` arrays), and its blocks to write from (`kept._start`)."""
    groups, n_tiles = bound.shape[1:]
    keep = kept is not None
    dim = center.shape[1] if keep else 1
    _choose_kernel[(groups,)](
        bound, scale, first_real, kept.center if keep else scale, center if keep else scale,
        kept.first if keep else scale, first_changed if keep else scale, kept.counts if keep else scale,
        kept._start if keep else scale, heads, groups, n_tiles, n_blocks, kept.counts.shape[1] if keep else n_blocks,
        D=dim, DC=min(dim, tiling.columns), NT=tiling.tile, KEEP=keep, num_warps=1)


def _first_or_zero(first_real, device):
    """The kernels' FIRST argument: `first_real`, or a zero where there is no padding to mask."""
    return first_real if first_real is not None else torch.zeros(1, dtype=torch.int64, device=device)


class KeySums:
    """The running sums of one layer's key cache kept from one decode call to the next.

    A decode step's span-mean search reads the running sums of the whole cache. Built anew on every call they cost
    a pass over K that writes the three float16 parts of every row (about 2 ms per layer and step at 1M tokens on an
    H100); kept here, a call writes only the blocks of keys that changed, which in decode is the last one, and
    reads K once to find out which those are.

    Which blocks to write is decided on the device, from the keys themselves, so the call can be replayed from a
    CUDA graph and the cache's own bookkeeping is not trusted: a block is written again unless its key count, its
    float32 total and its total weighted by each key's place in the block (irregular weights in [1, 2)) equal those
    its kept rows were built from, for it and every earlier block of its (batch row, KV head) group, and the group's
    padding start is the same. A cache that grew keeps its earlier blocks; one reordered (beam search), reset,
    cropped and rewritten, or with new padding writes what changed. The two totals are a checksum: a change inside
    one block that leaves both of every column's float32 totals as they were goes unseen. None that a cache makes
    does, but for changes within the totals' rounding (a key moved by an ulp or so beside a large common part), and
    those leave errors within the float32 scan's own. The centre and scale of the last whole build are kept while a
    whole build with that centre would choose the same scale (every sum, scaled, in [2^(FP16_EXP - 1), 2^FP16_EXP));
    where the sums grew or shrank out of that range, a group is built whole again with a new centre and scale. The
    span means do not depend on the centre, only their rounding does, and the bound the search's error estimate
    starts from (`KeyPrefix.norm`) is each kept row's own.

    One object per layer and cache: a call with other keys writes every block again (correct, and no faster than
    `key_prefix`). Memory: the three parts and the norms of every row, with the rows kept beyond the cache's
    length, about 3.4 times the layer's K cache.
    """

    # Rows kept beyond the cache's length, as a share of it (and four blocks at least), so that a cache growing one
    # token a step reallocates (and builds whole) once every so many steps, not every step.
    GROWTH = 1 / 8

    def __init__(self, block: int | None = None):
        self.block = block
        self._shape = None  # (groups, dim, device, keys per block) of the kept arrays

    def update(self, k: torch.Tensor, first_real: torch.Tensor) -> KeyPrefix:
        """The centred running sums of k [B, H_kv, L_kv, D] over its real keys (from `first_real`, int64 [B]), as
        `key_prefix` gives them, from the rows kept since the last call where the keys did not change. The returned
        arrays hold more rows than L_kv + 1 (their second axis); rows past L_kv are not the sums' and are never
        read. No host read-back, and no allocation of kept arrays once a call of the same shapes has run: such a
        call can be captured in a CUDA graph (whose key must then name `tensors()`, which a later call of other
        shapes may replace)."""
        batch, heads, length, dim = k.shape
        tiling = _tiling(dim, self.block)
        groups = batch * heads
        self._reserve(groups, dim, length, tiling, k.device)
        sums, abs_sums, w_sums = _block_totals(k, first_real, tiling, absolute=True, weighted=True)
        n_blocks = sums.shape[1]
        # a block's totals and key count against those its kept rows were written from (counted on the device: a
        # replayed graph compares with whatever call last wrote the rows, eager or replayed, of any length); the
        # kept ones are replaced by these
        offsets, center, first_changed = _tile_scan(sums, tiling, first_real, heads, length, w_sums, kept=self)
        # bounds with the kept centre and with the new one: a group keeps its centre and scale where a whole build
        # with that centre would choose the same scale; a kept group's rows stand before its first changed block
        # (their running sums start from the blocks before them)
        bounds = _bounds(offsets, abs_sums, (self.center, center), first_real, heads, length, tiling)
        _choose(bounds, self.scale, first_real, heads, n_blocks, tiling, self, center, first_changed)
        # int8 [groups, n_blocks]: the blocks this call writes (1), for tests and diagnostics. Held in a kept array:
        # a tensor made here and kept past the call would be one a CUDA-graph tree's pool cannot track
        dirty = self._dirty[:groups * n_blocks].view(groups, n_blocks)
        _launch_scan(k, first_real, offsets, self.center, self.scale, self.pairs, self.norm, self.third,
                     (self._start, dirty), tiling, length)
        self.written = dirty
        rows = self.pairs.shape[1]
        return KeyPrefix(self.pairs.view(batch, heads, rows, 2, dim), self.scale.view(batch, heads),
                         self.center.view(batch, heads, dim), self.norm.view(batch, heads, rows),
                         self.third.view(batch, heads, rows, dim))

    def fits(self, k: torch.Tensor) -> bool:
        """Whether a call over keys `k` finds its arrays made (a call that does not must not be captured in a CUDA
        graph: it allocates them). Shapes only, on the host."""
        batch, heads, length, dim = k.shape
        return self._fits(batch * heads, dim, length, _tiling(dim, self.block).block, k.device)

    def _fits(self, groups: int, dim: int, length: int, bs: int, device) -> bool:
        # the arrays' layout: per group, rows of dim columns, blocks of bs keys (not how groups split into heads)
        return self._shape == (groups, dim, device, bs) and self.pairs.shape[1] >= length + 1

    def _reserve(self, groups: int, dim: int, length: int, tiling: _Tiling, device) -> None:
        """Arrays for at least `length` keys of this shape; new ones (nothing kept) where they do not fit."""
        bs = tiling.block
        if self._fits(groups, dim, length, bs, device):
            return
        self._shape = None  # until every array is made (an allocation that fails leaves nothing that seems to fit)
        rows = length + 1 + max(int(length * self.GROWTH), 4 * bs)
        blocks = triton.cdiv(rows, bs)
        self.pairs = torch.zeros(groups, rows, 2, dim, dtype=torch.float16, device=device)
        self.third = torch.zeros(groups, rows, dim, dtype=torch.float16, device=device)
        self.norm = torch.zeros(groups, rows, dtype=torch.float32, device=device)
        self.sums = torch.zeros(groups, blocks, dim, dtype=torch.float32, device=device)
        self.w_sums = torch.zeros_like(self.sums)
        self.counts = torch.zeros(groups, blocks, dtype=torch.int32, device=device)  # keys per block when written
        self._dirty = torch.zeros(groups * blocks, dtype=torch.int8, device=device)  # the blocks a call writes
        self.center = torch.zeros(groups, dim, dtype=torch.float32, device=device)
        self.scale = torch.ones(groups, dtype=torch.float32, device=device)
        self.first = torch.full((groups,), -1, dtype=torch.int64, device=device)  # first real key; -1: never built
        self._start = torch.zeros(groups, dtype=torch.int32, device=device)  # the first block a call writes
        self._shape = (groups, dim, device, bs)

    @classmethod
    def nbytes(cls, groups: int, dim: int, length: int) -> int:
        """Bytes of the arrays kept for `groups` (batch row, KV head) groups of `length` keys of `dim` columns (on a
        GPU): about 3.4 times the groups' K in 16 bits, with the rows kept beyond the keys."""
        layout = cls()
        layout._reserve(groups, dim, length, _tiling(dim, None), torch.device("meta"))  # the arrays' shapes, no memory
        return sum(t.numel() * t.element_size() for t in layout.tensors())

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every array kept (none before the first call): what a CUDA graph of a call through this object reads and
        writes besides its inputs."""
        if self._shape is None:
            return ()
        return (self.pairs, self.third, self.norm, self.sums, self.w_sums, self.counts, self._dirty,
                self.center, self.scale, self.first, self._start)


def prefix_sums(x: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """Running sums of x [B, H, L, D] along L: float32 [B, H, L + 1, D], contiguous, row j holding ``sum_{i < j} x[i]``
    (float32 within blocks, float64 across them, one rounding). No host read-back (CUDA-graph capturable)."""
    batch, heads, length, dim = x.shape
    out = _scan(x, None, block)[0]
    return out.view(batch, heads, length + 1, dim)


def key_prefix(k: torch.Tensor, first_real: torch.Tensor, block: int | None = None) -> KeyPrefix:
    """The centred running sums of k [B, H_kv, L_kv, D] over its real keys (from `first_real`, int64 [B]), as the
    span-mean search and gate backward read them. `block`: keys per block, for tests. No host read-back."""
    batch, heads, length, dim = k.shape
    pairs, center, scale, norm, third = _scan(k, first_real, block)
    return KeyPrefix(pairs.view(batch, heads, length + 1, 2, dim), scale.view(batch, heads),
                     center.view(batch, heads, dim), norm.view(batch, heads, length + 1),
                     third.view(batch, heads, length + 1, dim))
