"""The forward's span pass with warp specialisation (Gluon, Hopper): a loader warp and two consumer warp groups per
program, the structure of FlashAttention-3, used where spans are long (`function.WS_SPAN_MIN_KEYS`).

`attend._entry_kernel` (Triton's `tl`) runs two programs of one warp group per SM, each walking its own 64 entries'
keys in blocks of 64 with its softmax and its tensor-core products in turn. Here one program takes a tile of
2 x BM sorted entries of one (batch, kv head) group:

- the loader partition (one warp) copies the key and value blocks of the union of the tile's ranges into a ring
  of STAGES shared-memory slots by bulk tensor copies, each slot with a "keys ready", a "values ready" and an
  "empty" barrier; a slot is refilled once both consumers have marked it empty;
- two consumer partitions (one warp group each, BM entries each; the default partition is the first) share those
  blocks: scores, online softmax, then the values' product, as the `tl` kernel does, on blocks of 128 keys with
  the query rows in shared memory (the scores' left operand), 240 registers a thread.

Measured on an H200 (benchmarks/results/ws-forward-h200-2026-12-03/): the span pass at 256K released 71.2 ms
against the `tl` kernel's 75.8-77.0, equal at 128K, slower at 64K and on the balanced setting's short spans. Not
kept (timed there): the next block's scores issued before this block's softmax, FlashAttention-3's order (this
block's values in flight through the next block's softmax: the machine code waits for them before the softmax
anyway), the consumers taking turns to issue, blocks of 64 keys, a persistent grid (PERSISTENT = 1 below, slower).

The backward's span dq (MODE_DQ_SPAN) runs on the same structure (`_dq_consumer`, `function.WS_SPAN_DQ_MIN_KEYS`):
the loader's blocks, each consumer's query and output-gradient rows in shared memory, per block the scores and the
output gradient's product with the values, then two float32 accumulators (``sum p (dp - c) k`` and ``sum p k``) on
blocks of 64 keys. Measured on an H200 (benchmarks/results/ws-span-dq-h200-2026-12-03/): 113.7 ms against the `tl`
kernel's 125.9-126.4 at 256K released, equal at 64K, slower on shorter spans. Where the forward kept its span
outputs (`function.SAVE_SPAN_OUTPUTS`) the backward knows dg before this pass, and the same consumers run MODE_DQ:
one accumulator (``sum p (coef dp - delta) k``), three products a key block (`function.WS_SPAN_DQ1_MIN_KEYS`).

Outputs are those of `attend.run_entries` in MODE_FWD_SPAN, MODE_FWD_WINDOW, MODE_DQ_SPAN and MODE_DQ (same entry
lists, same buffers), for contiguous 16-bit K and V and head dim 128 on Hopper; GPU only (Gluon has no interpreter). The GPU
tests run the forward and the backward with it (`tests/test_triton_gpu.py`); `benchmarks/ws_forward.py` and
`benchmarks/ws_span_dq.py` check and time it against the `tl` passes; `tests/test_sass_report.py` compiles it for
sm_90 on the CPU.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .common import (
    LN2,
    LOG2E,
    MODE_DQ,
    MODE_DQ_SPAN,
    MODE_FWD_SPAN,
    MODE_FWD_WINDOW,
    NEG_BIG,
    mode_value,
    rows_flat,
    sm_count,
)
from .entries import EntryList

__all__ = ["run_entries_ws", "kv_descriptors", "WS_TILES", "WS_DQ_TILES", "WS_DQ1_TILES"]

# The bulk copy into shared memory: `tma.async_load` from Triton 3.7 on, `async_copy_global_to_shared` before.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared

# (entries per consumer, keys per block, ring slots, registers of the second consumer, persistent (1) or one
# program per tile (0)): a tile holds twice the entries.
WS_TILES = (64, 128, 2, 240, 0)
# the same for the span dq pass (MODE_DQ_SPAN): two float32 accumulators of BM x D a consumer, so blocks of 64 keys
WS_DQ_TILES = (64, 64, 3, 240, 0)
# the same for the span dq of MODE_DQ (its dg known before the pass, `function.SAVE_SPAN_OUTPUTS`): one accumulator
WS_DQ1_TILES = (64, 64, 3, 240, 0)


@gluon.jit
def _rows(ent, b, NJ: gl.constexpr, Q_ROWS: gl.constexpr, H_Q, L_Q, sqb, sqh, sql):
    """Flat entry index -> (offset of its query row in Q, the row's flat index): `common.entry_rows` in Gluon."""
    row = (ent // NJ).to(gl.int64)
    if Q_ROWS:
        q_off = row * sql
    else:
        r = row % L_Q
        h = (row // L_Q) % H_Q
        q_off = b.to(gl.int64) * sqb + h * sqh + r * sql
    return q_off, row


@gluon.jit
def _tile(t, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, L_KV, BM2: gl.constexpr, BN: gl.constexpr,
          WARPS: gl.constexpr):
    """Tile t (tiles_per_grp per (batch, kv head) group): its group, first entry, the group's entry count, the
    offset of the group's lists, and the union of its entries' ranges as a first key, a number of key blocks and
    the first row of the group's keys in the flattened [rows, D] view (no real entry: no block)."""
    grp = t // tiles_per_grp
    start = (t % tiles_per_grp) * BM2
    count = gl.load(ENT_COUNT + grp)
    base = grp.to(gl.int64) * ent_stride
    lay: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    idx = start + gl.arange(0, BM2, layout=lay)
    emask = idx < count
    lo = gl.load(ENT_LO + base + idx, mask=emask, other=1)
    hi = gl.load(ENT_HI + base + idx, mask=emask, other=0)
    real = emask & (lo <= hi)
    kstart = gl.min(gl.where(real, lo, 1 << 30), axis=0)
    kend = gl.max(gl.where(real, hi, -1), axis=0)
    n_blocks = gl.maximum(gl.cdiv(kend + 1 - kstart, BN), 0)
    return grp, start, count, base, kstart, n_blocks, grp * L_KV


@gluon.jit
def _half(t, half, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, L_KV, H_KV,
          BM: gl.constexpr, BN: gl.constexpr, WARPS: gl.constexpr, s_rows: gl.constexpr, b_rows: gl.constexpr):
    """A consumer's half of tile t: its first entry, the group's entry count, the offset of the group's lists, the
    batch index, the tile's first key and number of key blocks; its entries' indices, mask and ranges in the scores'
    row layout with the keys every entry of the half attends (blocks inside skip the range mask); its entries' mask
    and ids in the gather layout."""
    grp, start, count, base, kstart, n_blocks, _ = _tile(t, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp,
                                                         L_KV, 2 * BM, BN, WARPS)
    first = start + half * BM
    idx_s = first + gl.arange(0, BM, layout=s_rows)
    emask_s = idx_s < count
    lo = gl.load(ENT_LO + base + idx_s, mask=emask_s, other=1)
    hi = gl.load(ENT_HI + base + idx_s, mask=emask_s, other=0)
    inner_lo = gl.max(gl.where(emask_s, lo, -1), axis=0)
    inner_hi = gl.min(gl.where(emask_s, hi, 1 << 30), axis=0)
    idx_b = first + gl.arange(0, BM, layout=b_rows)
    emask_b = idx_b < count
    ent_b = gl.load(ENT_ID + base + idx_b, mask=emask_b, other=0)
    return first, count, base, grp // H_KV, kstart, n_blocks, idx_s, emask_s, lo, hi, inner_lo, inner_hi, emask_b, ent_b


@gluon.jit
def _ring(K_DESC, V_DESC, D: gl.constexpr, BN: gl.constexpr, STAGES: gl.constexpr):
    """The loader's ring: STAGES slots of BN keys and values, each with a "keys ready" and a "values ready" barrier
    (one arrival: the bulk copy's) and an "empty" barrier (both consumers arrive)."""
    k_smem = gl.allocate_shared_memory(K_DESC.dtype, [STAGES, BN, D], K_DESC.layout)
    v_smem = gl.allocate_shared_memory(V_DESC.dtype, [STAGES, BN, D], V_DESC.layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    return k_smem, v_smem, k_ready, v_ready, empty


@gluon.jit
def _loader(K_DESC, V_DESC, k_smem, v_smem, k_ready, v_ready, empty, ENT_LO, ENT_HI, ENT_COUNT, ent_stride,
            tiles_per_grp, n_tiles, L_KV, BM2: gl.constexpr, BN: gl.constexpr, STAGES: gl.constexpr):
    """One warp: every key block of the program's tiles into the ring, each slot once both consumers have marked it
    empty (the barriers start complete, so the first STAGES go at once); the next tile's first blocks load while
    the consumers finish this one."""
    it = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        _, _, _, _, kstart, n_blocks, row0 = _tile(t, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, L_KV,
                                                   BM2, BN, 1)
        for j in range(n_blocks):
            slot = it % STAGES
            mbarrier.wait(empty.index(slot), ((it // STAGES) & 1) ^ 1)
            n0 = row0 + kstart + j * BN
            mbarrier.expect(k_ready.index(slot), K_DESC.block_type.nbytes)
            _tma_load(K_DESC, [n0, 0], k_ready.index(slot), k_smem.index(slot))
            mbarrier.expect(v_ready.index(slot), V_DESC.block_type.nbytes)
            _tma_load(V_DESC, [n0, 0], v_ready.index(slot), v_smem.index(slot))
            it += 1


@gluon.jit
def _consumer(
    half, Q, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
    OW, LSEW, SPAN_O, OUT, GATE, LSE_IN, OUT_E,
    k_smem, v_smem, k_ready, v_ready, empty, q_smem,
    sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, sm_scale,
    NJ: gl.constexpr, MODE: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
    STAGES: gl.constexpr, Q_ROWS: gl.constexpr, STORE_OW: gl.constexpr, STORE_OUT: gl.constexpr, KS: gl.constexpr,
):
    """One warp group: for each of the program's tiles, the online softmax of its BM entries (the tile's half
    `half`) over the tile's key blocks, then their outputs as `attend._entry_kernel` writes them."""
    WARPS: gl.constexpr = 4
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, BN, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, D, 16])
    p_dot: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_blk: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [WARPS, 1], [1, 0])
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_cols: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_cols: gl.constexpr = gl.SliceLayout(0, o_layout)
    b_rows: gl.constexpr = gl.SliceLayout(1, rows_blk)
    b_cols: gl.constexpr = gl.SliceLayout(0, rows_blk)
    dtype: gl.constexpr = k_smem.dtype
    qk_scale = sm_scale * LOG2E
    s_zero = gl.zeros([BM, BN], gl.float32, layout=s_layout)
    offs_n = gl.arange(0, BN, layout=s_cols)
    offs_d_b = gl.arange(0, D, layout=b_cols)
    offs_d = gl.arange(0, D, layout=o_cols)
    # The query rows go to shared memory, the scores' left operand from there: in registers (32 a thread) they
    # were overwritten within the loop by the compiler (Triton 3.6) at 128 keys a block.
    q_buf = q_smem.index(half)

    it = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        first, count, base, b, kstart, n_blocks, _, _, lo, hi, inner_lo, inner_hi, emask_b, ent_b = _half(
            t, half, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, L_KV, H_KV, BM, BN, WARPS, s_rows,
            b_rows)
        q_off, _ = _rows(ent_b, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
        q = gl.load(Q + q_off[:, None] + offs_d_b[None, :], mask=emask_b[:, None], other=0.0)
        q_buf.store(q)
        fence_async_shared()

        m_i = gl.full([BM], NEG_BIG, gl.float32, layout=s_rows)
        l_i = gl.zeros([BM], gl.float32, layout=s_rows)
        acc = gl.zeros([BM, D], gl.float32, layout=o_layout)
        for j in range(n_blocks):
            slot = it % STAGES
            phase = (it // STAGES) & 1
            n0 = kstart + j * BN
            mbarrier.wait(k_ready.index(slot), phase)
            s = warpgroup_mma(q_buf, k_smem.index(slot).permute((1, 0)), s_zero, use_acc=False)
            if (n0 < inner_lo) | (n0 + BN - 1 > inner_hi):
                kidx = n0 + offs_n
                inside = (kidx[None, :] >= lo[:, None]) & (kidx[None, :] <= hi[:, None])
                s = gl.where(inside, s, float("-inf"))
            m_new = gl.maximum(m_i, gl.max(s, axis=1))
            alpha = gl.exp2((m_i - m_new) * qk_scale)
            p = gl.exp2(s * qk_scale - (m_new * qk_scale)[:, None])
            l_i = l_i * alpha + gl.sum(p, axis=1)
            m_i = m_new
            acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
            mbarrier.wait(v_ready.index(slot), phase)
            acc_t = warpgroup_mma(gl.convert_layout(p.to(dtype), p_dot), v_smem.index(slot), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc_t,))
            mbarrier.arrive(empty.index(slot), count=1)
            it += 1

        # the tile's outputs, in the accumulator's layout (as attend._entry_kernel)
        l_o = gl.convert_layout(l_i, o_rows)
        m_o = gl.convert_layout(m_i, o_rows)
        has = l_o > 0
        o = acc / gl.where(has, l_o, 1.0)[:, None]
        lse = gl.where(has, (m_o * qk_scale + gl.log2(gl.where(has, l_o, 1.0))) * LN2, NEG_BIG)
        idx_o = first + gl.arange(0, BM, layout=o_rows)
        emask_o = idx_o < count
        ent_o = gl.load(ENT_ID + base + idx_o, mask=emask_o, other=0)
        _, row_o = _rows(ent_o, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
        if MODE == MODE_FWD_WINDOW:
            if STORE_OW:
                gl.store(OW + row_o[:, None] * D + offs_d[None, :], o.to(OW.dtype.element_ty), mask=emask_o[:, None])
                gl.store(LSEW + row_o, lse, mask=emask_o)
            res = o
            for jj in gl.static_range(KS):  # the row's spans, as `attend._entry_kernel` mixes them
                sid = row_o * KS + jj
                g = gl.load(GATE + sid, mask=emask_o, other=0.0)
                lse_s = gl.load(LSE_IN + sid, mask=emask_o, other=NEG_BIG)
                o_s = gl.load(SPAN_O + sid[:, None] * D + offs_d[None, :], mask=emask_o[:, None], other=0.0)
                w = 1.0 / (1.0 + gl.exp(gl.minimum(lse - lse_s, 80.0)))
                res += gl.where((g > 0.0)[:, None], (g * w)[:, None] * (o_s.to(gl.float32) - o), 0.0)
            if STORE_OUT:
                gl.store(OUT + row_o[:, None] * D + offs_d[None, :], res.to(OUT.dtype.element_ty),
                         mask=emask_o[:, None])
        else:
            ent_flat = ent_o.to(gl.int64)
            gl.store(SPAN_O + ent_flat[:, None] * D + offs_d[None, :], o.to(SPAN_O.dtype.element_ty),
                     mask=emask_o[:, None])
            gl.store(OUT_E + ent_flat, lse, mask=emask_o)


@gluon.jit
def _ws_forward_kernel(
    Q, K_DESC, V_DESC,
    ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
    OW, LSEW, SPAN_O, OUT, GATE, LSE_IN, OUT_E,
    sqb, sqh, sql,
    H_Q, H_KV, L_Q, L_KV, sm_scale,
    NJ: gl.constexpr, MODE: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
    STAGES: gl.constexpr, REGS: gl.constexpr, Q_ROWS: gl.constexpr,
    STORE_OW: gl.constexpr, STORE_OUT: gl.constexpr, KS: gl.constexpr, num_warps: gl.constexpr,
):
    dtype: gl.constexpr = K_DESC.dtype
    k_smem, v_smem, k_ready, v_ready, empty = _ring(K_DESC, V_DESC, D, BN, STAGES)
    q_smem = gl.allocate_shared_memory(dtype, [2, BM, D], gl.NVMMASharedLayout.get_default_for([BM, D], dtype))

    gl.warp_specialize([
        (_consumer, (0, Q, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
                     OW, LSEW, SPAN_O, OUT, GATE, LSE_IN, OUT_E, k_smem, v_smem, k_ready, v_ready, empty, q_smem,
                     sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, sm_scale,
                     NJ, MODE, D, BM, BN, STAGES, Q_ROWS, STORE_OW, STORE_OUT, KS)),
        (_consumer, (1, Q, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
                     OW, LSEW, SPAN_O, OUT, GATE, LSE_IN, OUT_E, k_smem, v_smem, k_ready, v_ready, empty, q_smem,
                     sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, sm_scale,
                     NJ, MODE, D, BM, BN, STAGES, Q_ROWS, STORE_OW, STORE_OUT, KS)),
        (_loader, (K_DESC, V_DESC, k_smem, v_smem, k_ready, v_ready, empty, ENT_LO, ENT_HI, ENT_COUNT, ent_stride,
                   tiles_per_grp, n_tiles, L_KV, 2 * BM, BN, STAGES)),
    ], [4, 1], [REGS, 24])


@gluon.jit
def _dq_consumer(
    half, Q, DO, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
    LSE_IN, COEF, DELTA, OUT_E, DQ,
    k_smem, v_smem, k_ready, v_ready, empty, q_smem, do_smem,
    sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, sm_scale,
    NJ: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, STAGES: gl.constexpr,
    Q_ROWS: gl.constexpr, FUSED: gl.constexpr,
):
    """One warp group, MODE_DQ_SPAN (FUSED) or MODE_DQ of `attend._entry_kernel` for its BM entries of each tile:
    per key block the scores (Q K^T) and the output gradient's product with the values (dO V^T), then with FUSED
    ``sum p (dp - c) k`` and ``sum p k`` into two accumulators, at the end the span's dq (added atomically) and
    ``sum p (dp - c)``; else ``sum p (coef dp - delta) k`` into one, at the end added atomically as dq."""
    WARPS: gl.constexpr = 4
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, BN, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, D, 16])
    p_dot: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_blk: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [WARPS, 1], [1, 0])
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_cols: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_cols: gl.constexpr = gl.SliceLayout(0, o_layout)
    b_rows: gl.constexpr = gl.SliceLayout(1, rows_blk)
    b_cols: gl.constexpr = gl.SliceLayout(0, rows_blk)
    dtype: gl.constexpr = k_smem.dtype
    qk_scale = sm_scale * LOG2E
    s_zero = gl.zeros([BM, BN], gl.float32, layout=s_layout)
    offs_n = gl.arange(0, BN, layout=s_cols)
    offs_d_b = gl.arange(0, D, layout=b_cols)
    offs_d = gl.arange(0, D, layout=o_cols)
    q_buf = q_smem.index(half)
    do_buf = do_smem.index(half)

    it = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        first, count, base, b, kstart, n_blocks, idx_s, emask_s, lo, hi, inner_lo, inner_hi, emask_b, ent_b = _half(
            t, half, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, L_KV, H_KV, BM, BN, WARPS, s_rows,
            b_rows)
        ent_s = gl.load(ENT_ID + base + idx_s, mask=emask_s, other=0).to(gl.int64)
        lse2 = gl.load(LSE_IN + ent_s, mask=emask_s, other=0.0) * LOG2E
        delta = gl.load(DELTA + ent_s, mask=emask_s, other=0.0)
        if not FUSED:
            coef_s = gl.load(COEF + ent_s, mask=emask_s, other=0.0)
        q_off, row_b = _rows(ent_b, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
        q_buf.store(gl.load(Q + q_off[:, None] + offs_d_b[None, :], mask=emask_b[:, None], other=0.0))
        do_buf.store(gl.load(DO + row_b[:, None] * D + offs_d_b[None, :], mask=emask_b[:, None], other=0.0))
        fence_async_shared()

        acc = gl.zeros([BM, D], gl.float32, layout=o_layout)
        if FUSED:
            acc_b = gl.zeros([BM, D], gl.float32, layout=o_layout)
            pdp_sum = gl.zeros([BM], gl.float32, layout=s_rows)
        for j in range(n_blocks):
            slot = it % STAGES
            phase = (it // STAGES) & 1
            n0 = kstart + j * BN
            k_buf = k_smem.index(slot)
            mbarrier.wait(k_ready.index(slot), phase)
            s_t = warpgroup_mma(q_buf, k_buf.permute((1, 0)), s_zero, use_acc=False, is_async=True)
            mbarrier.wait(v_ready.index(slot), phase)
            dp_t = warpgroup_mma(do_buf, v_smem.index(slot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s_t,))
            x = s * qk_scale - lse2[:, None]
            if (n0 < inner_lo) | (n0 + BN - 1 > inner_hi):
                kidx = n0 + offs_n
                x = gl.where((kidx[None, :] >= lo[:, None]) & (kidx[None, :] <= hi[:, None]), x, float("-inf"))
            p = gl.exp2(x)
            dp = warpgroup_mma_wait(num_outstanding=0, deps=(dp_t,))
            if FUSED:
                pdp = p * (dp - delta[:, None])
                pdp_sum += gl.sum(pdp, axis=1)
                a_t = warpgroup_mma(gl.convert_layout(pdp.to(dtype), p_dot), k_buf, acc, is_async=True)
                b_t = warpgroup_mma(gl.convert_layout(p.to(dtype), p_dot), k_buf, acc_b, is_async=True)
                acc, acc_b = warpgroup_mma_wait(num_outstanding=0, deps=(a_t, b_t))
            else:
                dz = p * (coef_s[:, None] * dp - delta[:, None])
                a_t = warpgroup_mma(gl.convert_layout(dz.to(dtype), p_dot), k_buf, acc, is_async=True)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(a_t,))
            mbarrier.arrive(empty.index(slot), count=1)
            it += 1

        if FUSED:
            gl.store(OUT_E + ent_s, pdp_sum, mask=emask_s)
        idx_o = first + gl.arange(0, BM, layout=o_rows)
        emask_o = idx_o < count
        ent_o = gl.load(ENT_ID + base + idx_o, mask=emask_o, other=0)
        real = emask_o & (gl.load(ENT_LO + base + idx_o, mask=emask_o, other=1)
                          <= gl.load(ENT_HI + base + idx_o, mask=emask_o, other=0))
        _, row_o = _rows(ent_o, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
        if FUSED:
            coef = gl.load(COEF + ent_o.to(gl.int64), mask=emask_o, other=0.0)
            dq = (coef * sm_scale)[:, None] * (acc - gl.convert_layout(pdp_sum, o_rows)[:, None] * acc_b)
        else:
            dq = acc * sm_scale
        gl.atomic_add(DQ + row_o[:, None] * D + offs_d[None, :], dq, mask=real[:, None], sem="relaxed")


@gluon.jit
def _ws_dq_kernel(
    Q, K_DESC, V_DESC, DO,
    ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
    LSE_IN, COEF, DELTA, OUT_E, DQ,
    sqb, sqh, sql,
    H_Q, H_KV, L_Q, L_KV, sm_scale,
    NJ: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
    STAGES: gl.constexpr, REGS: gl.constexpr, Q_ROWS: gl.constexpr, FUSED: gl.constexpr, num_warps: gl.constexpr,
):
    dtype: gl.constexpr = K_DESC.dtype
    rows_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BM, D], dtype)
    k_smem, v_smem, k_ready, v_ready, empty = _ring(K_DESC, V_DESC, D, BN, STAGES)
    q_smem = gl.allocate_shared_memory(dtype, [2, BM, D], rows_layout)
    do_smem = gl.allocate_shared_memory(dtype, [2, BM, D], rows_layout)

    gl.warp_specialize([
        (_dq_consumer, (0, Q, DO, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
                        LSE_IN, COEF, DELTA, OUT_E, DQ, k_smem, v_smem, k_ready, v_ready, empty, q_smem, do_smem,
                        sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, sm_scale, NJ, D, BM, BN, STAGES, Q_ROWS, FUSED)),
        (_dq_consumer, (1, Q, DO, ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride, tiles_per_grp, n_tiles,
                        LSE_IN, COEF, DELTA, OUT_E, DQ, k_smem, v_smem, k_ready, v_ready, empty, q_smem, do_smem,
                        sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, sm_scale, NJ, D, BM, BN, STAGES, Q_ROWS, FUSED)),
        (_loader, (K_DESC, V_DESC, k_smem, v_smem, k_ready, v_ready, empty, ENT_LO, ENT_HI, ENT_COUNT, ent_stride,
                   tiles_per_grp, n_tiles, L_KV, 2 * BM, BN, STAGES)),
    ], [4, 1], [REGS, 24])


def kv_descriptors(kernel: str, inputs: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_n: int,
                   *contiguous: torch.Tensor) -> tuple[TensorDescriptor, TensorDescriptor]:
    """The bulk-copy descriptors of K and V in blocks of `block_n` rows, for the warp-specialised kernels (this
    module's and `attend_bwd_ws`'s), after the checks they share: 16-bit contiguous K and V (and the tensors in
    `contiguous`, named with them in `inputs`), query rows with a contiguous last dim, head dim 128."""
    dim = q.shape[-1]
    if q.stride(3) != 1 or not all(t.is_contiguous() for t in (k, v, *contiguous)) or \
            k.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"the warp-specialised {kernel} takes contiguous 16-bit {inputs} and contiguous query rows")
    if dim != 128:
        raise ValueError(f"the warp-specialised {kernel} takes head dim 128, not {dim}")
    dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}[k.dtype]
    layout = gl.NVMMASharedLayout.get_default_for([block_n, dim], dtype)
    return (TensorDescriptor.from_tensor(k.view(-1, dim), [block_n, dim], layout),
            TensorDescriptor.from_tensor(v.view(-1, dim), [block_n, dim], layout))


def run_entries_ws(
    mode,
    entries: EntryList,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    o_w: torch.Tensor | None = None,
    lse_w: torch.Tensor | None = None,
    span_o: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    lse_in: torch.Tensor | None = None,
    out_e: torch.Tensor | None = None,
    do: torch.Tensor | None = None,
    coef: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    dq: torch.Tensor | None = None,
    tiles: tuple[int, ...] | None = None,
) -> None:
    """`attend.run_entries` for MODE_FWD_SPAN, MODE_FWD_WINDOW, MODE_DQ_SPAN and MODE_DQ (a span list's dq) on this
    kernel: contiguous 16-bit K and V (and output gradient), a query whose last dim is contiguous, head dim 128, a
    Hopper GPU."""
    mode = mode_value(mode)
    dq_modes = (int(MODE_DQ_SPAN), int(MODE_DQ))
    if mode not in (int(MODE_FWD_SPAN), int(MODE_FWD_WINDOW), *dq_modes):
        raise ValueError(f"the warp-specialised entry kernel runs the forward passes and a span dq, not mode {mode}")
    batch, heads_q, len_q, dim = q.shape
    heads_kv = k.shape[1]
    groups, n_max = entries.eid.shape
    if n_max == 0:
        return
    default = {int(MODE_DQ_SPAN): WS_DQ_TILES, int(MODE_DQ): WS_DQ1_TILES}.get(mode, WS_TILES)
    block_m, block_n, stages, regs, persistent = tiles or default
    k_desc, v_desc = kv_descriptors("entry kernel", "K and V", q, k, v, block_n)
    dummy = q.new_empty(1, dtype=torch.float32)

    def buf(x):
        return dummy if x is None else x

    spans_per_row = gate.shape[-1] if mode == int(MODE_FWD_WINDOW) and span_o is not None else 0
    tiles_per_grp = triton.cdiv(n_max, 2 * block_m)
    n_tiles = tiles_per_grp * groups
    # persistent: one program an SM (164 KB of shared memory each) walks tiles pid, pid + grid, ...
    grid = (min(n_tiles, sm_count(q.device)) if persistent else n_tiles,)
    if mode in dq_modes:
        if not do.is_contiguous():
            raise ValueError("the warp-specialised span dq takes a contiguous output gradient")
        _ws_dq_kernel[grid](
            q, k_desc, v_desc, do,
            entries.eid, entries.lo, entries.hi, entries.count, entries.eid.stride(0), tiles_per_grp, n_tiles,
            lse_in, coef, delta, buf(out_e), dq,
            q.stride(0), q.stride(1), q.stride(2),
            heads_q, heads_kv, len_q, k.shape[2], scale,
            NJ=entries.nj, D=dim, BM=block_m, BN=block_n, STAGES=stages, REGS=regs, Q_ROWS=rows_flat(q),
            FUSED=mode == int(MODE_DQ_SPAN), num_warps=4, maxnreg=168,
        )
        return
    # registers: twelve warps (the loader's warp group rounded up) share the SM's 64K; the default partition gets
    # what the second consumer (regs) and the loader's group (24) leave of 168 a thread
    _ws_forward_kernel[grid](
        q, k_desc, v_desc,
        entries.eid, entries.lo, entries.hi, entries.count, entries.eid.stride(0), tiles_per_grp, n_tiles,
        buf(o_w), buf(lse_w), buf(span_o), buf(out), buf(gate), buf(lse_in), buf(out_e),
        q.stride(0), q.stride(1), q.stride(2),
        heads_q, heads_kv, len_q, k.shape[2], scale,
        NJ=entries.nj, MODE=mode, D=dim, BM=block_m, BN=block_n, STAGES=stages, REGS=regs, Q_ROWS=rows_flat(q),
        STORE_OW=o_w is not None, STORE_OUT=out is not None, KS=spans_per_row,
        num_warps=4, maxnreg=168,
    )
