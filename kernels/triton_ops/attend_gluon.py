"""The entry kernel's two forward passes written in Gluon for Hopper: the next key block's scores issued before this
block's softmax.

`attend._entry_kernel` (Triton's `tl`) waits for every tensor-core product right after issuing it: a product whose
result the same iteration uses is waited for at once, so a program's softmax and its products never overlap, and
at 8 warps per SM the passes are bound by that latency (benchmarks/NOTES.md, items 11 and 13). Gluon exposes the
warp-group products as asynchronous operations with explicit waits (`warpgroup_mma(..., is_async=True)`,
`warpgroup_mma_wait`), and the key and value blocks as bulk tensor copies into a ring of shared-memory slots, each
with its barrier. One iteration over key block j:

1. issue the scores of block j + 1, ``S_{j+1} = q K_{j+1}^T`` (asynchronous);
2. the online softmax of block j's scores, computed while the tensor cores run step 1;
3. rescale the accumulator, issue ``acc += P_j V_j`` (asynchronous), wait for both products;
4. refill block j's slot with block j + STAGES.

`benchmarks/sass_report.py gluon:1` shows that order in the machine code. Keeping each values' product in flight
through the next iteration's softmax as well (FlashAttention-3's full intra-warp-group pipelining: wait for one
outstanding group, rescale, issue) compiled, with Triton 3.6 and 3.9, to products serialised by ptxas ("C7514:
wgmma.mma_async instructions are serialized due to non wgmma instructions reading accumulator registers of a wgmma
between start and end of the pipeline stage"), so it is not done.

The passes and their outputs are those of `attend.run_entries` in MODE_FWD_SPAN and MODE_FWD_WINDOW (same entry
lists, same buffers), for contiguous 16-bit K and V (the tensor-descriptor path) on Hopper; GPU only (Gluon has
no interpreter). `run_entries_gluon` takes the place of `run_entries` for those two modes where
`function.GLUON_FORWARD` is on (off by default). `benchmarks/profile_passes.py` times it beside the `tl` passes and
checks its outputs against theirs, and `tests/test_triton_gpu.py` compares the two; until a GPU has run them, it is
checked only by compiling for sm_90 on the CPU (`tests/test_sass_report.py`).
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .common import LN2, LOG2E, MODE_FWD_SPAN, MODE_FWD_WINDOW, NEG_BIG, mode_value, rows_flat
from .entries import EntryList

__all__ = ["run_entries_gluon", "GLUON_TILES"]

# The bulk copy into shared memory: `tma.async_load` from Triton 3.7 on, `async_copy_global_to_shared` before.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared

# (entries per program, keys per block, warps, ring slots): one warp group per program.
GLUON_TILES = (64, 64, 4, 3)


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
def _entry_forward_kernel(
    Q, K_DESC, V_DESC,
    ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride,
    OW, LSEW, SPAN_O, OUT, GATE, LSE_IN, OUT_E,
    sqb, sqh, sql,
    H_Q, H_KV, L_Q, L_KV, sm_scale,
    NJ: gl.constexpr, MODE: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
    STAGES: gl.constexpr, Q_ROWS: gl.constexpr, STORE_OW: gl.constexpr, STORE_OUT: gl.constexpr,
    KS: gl.constexpr, num_warps: gl.constexpr,
):
    # Layouts: scores [BM, BN] and the accumulator [BM, D] as warp-group products; q and p as their left operands
    # in registers; a blocked layout for the gathered query rows and the epilogue's loads.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BN, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, D, 16])
    q_dot: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    p_dot: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_blk: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0])
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_cols: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_cols: gl.constexpr = gl.SliceLayout(0, o_layout)
    b_rows: gl.constexpr = gl.SliceLayout(1, rows_blk)
    b_cols: gl.constexpr = gl.SliceLayout(0, rows_blk)

    pid = gl.program_id(0)
    grp = gl.program_id(1)
    count = gl.load(ENT_COUNT + grp)
    start = pid * BM
    if start < count:
        b = grp // H_KV
        kv = grp % H_KV
        base = grp.to(gl.int64) * ent_stride

        # the tile's entries, in the scores' row layout (ranges) and the blocked one (query rows)
        idx_s = start + gl.arange(0, BM, layout=s_rows)
        emask_s = idx_s < count
        lo = gl.load(ENT_LO + base + idx_s, mask=emask_s, other=1)
        hi = gl.load(ENT_HI + base + idx_s, mask=emask_s, other=0)
        real = emask_s & (lo <= hi)
        kstart = gl.min(gl.where(real, lo, 1 << 30), axis=0)
        kend = gl.max(gl.where(real, hi, -1), axis=0)
        inner_lo = gl.max(gl.where(emask_s, lo, -1), axis=0)
        inner_hi = gl.min(gl.where(emask_s, hi, 1 << 30), axis=0)

        idx_b = start + gl.arange(0, BM, layout=b_rows)
        emask_b = idx_b < count
        ent_b = gl.load(ENT_ID + base + idx_b, mask=emask_b, other=0)
        q_off, _ = _rows(ent_b, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
        offs_d_b = gl.arange(0, D, layout=b_cols)
        q = gl.load(Q + q_off[:, None] + offs_d_b[None, :], mask=emask_b[:, None], other=0.0)
        q = gl.convert_layout(q, q_dot)
        qk_scale = sm_scale * LOG2E

        # the ring of key and value blocks, one barrier per slot
        dtype: gl.constexpr = K_DESC.dtype
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], K_DESC.layout)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], V_DESC.layout)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
        row0 = (b * H_KV + kv) * L_KV  # first row of this (batch, kv head) in the flattened [rows, D] view
        n_blocks = gl.maximum(gl.cdiv(kend + 1 - kstart, BN), 0)
        block_bytes: gl.constexpr = 2 * BN * D * dtype.primitive_bitwidth // 8
        for i in gl.static_range(STAGES):  # the first blocks in flight (rows past kend are masked out below)
            ready = i < n_blocks
            mbarrier.expect(bars.index(i), block_bytes, pred=ready)
            _tma_load(K_DESC, [row0 + kstart + i * BN, 0], bars.index(i), k_smem.index(i),
                                            pred=ready)
            _tma_load(V_DESC, [row0 + kstart + i * BN, 0], bars.index(i), v_smem.index(i),
                                            pred=ready)

        m_i = gl.full([BM], NEG_BIG, gl.float32, layout=s_rows)
        l_i = gl.zeros([BM], gl.float32, layout=s_rows)
        acc = gl.zeros([BM, D], gl.float32, layout=o_layout)
        s_zero = gl.zeros([BM, BN], gl.float32, layout=s_layout)
        offs_n = gl.arange(0, BN, layout=s_cols)
        if n_blocks > 0:
            mbarrier.wait(bars.index(0), 0)
            s_cur = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False)
        else:
            s_cur = s_zero
        for j in range(n_blocks):
            slot = j % STAGES
            n0 = kstart + j * BN
            # 1. the next block's scores, in flight while this block's softmax runs
            has_next = j + 1 < n_blocks
            nslot = (j + 1) % STAGES
            mbarrier.wait(bars.index(nslot), ((j + 1) // STAGES) & 1, pred=has_next)
            s_next = warpgroup_mma(q, k_smem.index(nslot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            # 2. this block's online softmax (raw scores; the scale folds into the exponent's multiply-add)
            s = s_cur
            if (n0 < inner_lo) | (n0 + BN - 1 > inner_hi):
                kidx = n0 + offs_n
                inside = (kidx[None, :] >= lo[:, None]) & (kidx[None, :] <= hi[:, None])
                s = gl.where(inside, s, float("-inf"))
            m_new = gl.maximum(m_i, gl.max(s, axis=1))
            alpha = gl.exp2((m_i - m_new) * qk_scale)
            p = gl.exp2(s * qk_scale - (m_new * qk_scale)[:, None])
            l_i = l_i * alpha + gl.sum(p, axis=1)
            m_i = m_new
            # 3. the values' product on the rescaled accumulator (complete since the last iteration's wait; no wait
            #    may stand between step 1 and this issue, or the compiler moves step 2 after it); then both
            #    products are done
            acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
            acc_t = warpgroup_mma(gl.convert_layout(p.to(dtype), p_dot), v_smem.index(slot), acc, is_async=True)
            s_cur, acc = warpgroup_mma_wait(num_outstanding=0, deps=(s_next, acc_t))
            # 4. this block's slot is free: refill it with the block STAGES ahead
            ahead = j + STAGES
            refill = ahead < n_blocks
            mbarrier.expect(bars.index(slot), block_bytes, pred=refill)
            _tma_load(K_DESC, [row0 + kstart + ahead * BN, 0], bars.index(slot), k_smem.index(slot), pred=refill)
            _tma_load(V_DESC, [row0 + kstart + ahead * BN, 0], bars.index(slot), v_smem.index(slot), pred=refill)
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))

        # epilogue in the accumulator's layout
        l_o = gl.convert_layout(l_i, o_rows)
        m_o = gl.convert_layout(m_i, o_rows)
        has = l_o > 0
        o = acc / gl.where(has, l_o, 1.0)[:, None]
        lse = gl.where(has, (m_o * qk_scale + gl.log2(gl.where(has, l_o, 1.0))) * LN2, NEG_BIG)
        idx_o = start + gl.arange(0, BM, layout=o_rows)
        emask_o = idx_o < count
        ent_o = gl.load(ENT_ID + base + idx_o, mask=emask_o, other=0)
        _, row_o = _rows(ent_o, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
        offs_d = gl.arange(0, D, layout=o_cols)
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


def run_entries_gluon(
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
    tiles: tuple[int, ...] | None = None,
) -> None:
    """`attend.run_entries` for MODE_FWD_SPAN and MODE_FWD_WINDOW on this kernel: contiguous 16-bit K and V, a query
    whose last dim is contiguous, head dim 128 (the one compiled and checked), a Hopper GPU."""
    mode = mode_value(mode)
    if mode not in (int(MODE_FWD_SPAN), int(MODE_FWD_WINDOW)):
        raise ValueError(f"the Gluon entry kernel runs the forward passes only, not mode {mode}")
    batch, heads_q, len_q, dim = q.shape
    heads_kv = k.shape[1]
    groups, n_max = entries.eid.shape
    if n_max == 0:
        return
    block_m, block_n, warps, stages = tiles or GLUON_TILES
    if q.stride(3) != 1 or not (k.is_contiguous() and v.is_contiguous()) or k.dtype not in (torch.bfloat16,
                                                                                              torch.float16):
        raise ValueError("the Gluon entry kernel takes contiguous 16-bit K and V and a query with contiguous rows")
    if dim != 128:
        raise ValueError(f"the Gluon entry kernel takes head dim 128, not {dim}")
    dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}[k.dtype]
    layout = gl.NVMMASharedLayout.get_default_for([block_n, dim], dtype)
    k_desc = TensorDescriptor.from_tensor(k.view(-1, dim), [block_n, dim], layout)
    v_desc = TensorDescriptor.from_tensor(v.view(-1, dim), [block_n, dim], layout)
    dummy = q.new_empty(1, dtype=torch.float32)

    def buf(x):
        return dummy if x is None else x

    spans_per_row = gate.shape[-1] if mode == int(MODE_FWD_WINDOW) and span_o is not None else 0
    grid = (triton.cdiv(n_max, block_m), groups)
    _entry_forward_kernel[grid](
        q, k_desc, v_desc,
        entries.eid, entries.lo, entries.hi, entries.count, entries.eid.stride(0),
        buf(o_w), buf(lse_w), buf(span_o), buf(out), buf(gate), buf(lse_in), buf(out_e),
        q.stride(0), q.stride(1), q.stride(2),
        heads_q, heads_kv, len_q, k.shape[2], scale,
        NJ=entries.nj, MODE=mode, D=dim, BM=block_m, BN=block_n, STAGES=stages, Q_ROWS=rows_flat(q),
        STORE_OW=o_w is not None, STORE_OUT=out is not None, KS=spans_per_row,
        num_warps=warps,
    )
