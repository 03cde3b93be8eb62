"""dk/dv with warp specialisation (Gluon, Hopper): a loader warp group and two consumer warp groups per program,
the structure of FlashAttention-3's backward, for the key side of an entry list (`attend_bwd.dkdv`'s job).

`attend_bwd._dkdv_kernel` (Triton's `tl`) runs one warp group per 64 keys, computes the scores entry-major
([entries x keys]) and moves the probabilities through shared memory for the values' product, gathering each tile's
query and output-gradient rows itself. Here one program owns 2 x BN keys of one (batch, kv head) group:

- the loader partition (four warps) copies the program's keys and values once (bulk tensor copies), then for each
  tile of BM sorted entries gathers their query rows, output-gradient rows, log-sum-exps, coefficients, deltas and
  ranges into a ring of STAGES shared-memory slots (asynchronous copies; a slot's "ready" barrier completes when
  every loader thread's copies have landed, and it is refilled once both consumers have marked it empty);
- two consumer partitions (one warp group each, BN keys each) compute the scores key-major, ``S^T = K Q^T``, so
  the probabilities are already the left operand of ``dV += P^T dO`` in registers, then ``dP^T = V dO^T`` and
  ``dK += dS^T Q``, with K and V read from shared memory by the products.

Same inputs and outputs as `attend_bwd.dkdv` (same entry lists and scan order, float32 dk/dv), for contiguous 16-bit
K and V, query rows with a contiguous last dim and head dim 128 on Hopper; GPU only (Gluon has no interpreter).
`function.backward_pass` picks it by `function.ws_key_pass`; `benchmarks/ws_dkdv.py` checks and times it against the
`tl` kernel; `tests/test_sass_report.py` compiles it for sm_90 on the CPU.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .attend_ws import _rows, _tma_load, kv_descriptors
from .block_ranges import block_ranges
from .common import LOG2E, rows_flat
from .entries import EntryList
from .mix_bwd import fold_coefficient

__all__ = ["dkdv_ws", "WS_DKDV_TILES"]

# The gathered copy into shared memory: `async_copy.async_load` from Triton 3.7 on, `async_copy_global_to_shared`
# before.
_gather = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared

# (entries per tile, keys per consumer (a program owns twice as many), ring slots, registers of the second
# consumer, registers of the loader)
WS_DKDV_TILES = (64, 64, 3, 232, 40)
# rows of a tile the loader gathers per copy instruction group (keeps its pointers within its registers)
_CHUNK = gl.constexpr(16)


@gluon.jit
def _slice(RANGES, PERIOD, rng, bucket, BM: gl.constexpr, ROTATE: gl.constexpr):
    """The bucket's slice of sorted entries that may reach the program's keys: (first entry, end, tiles, first tile
    of the scan). As `attend_bwd._dkdv_kernel`: every program starts at the first multiple of the bucket's longest
    slice, so programs side by side read an entry at about the same time (from L2)."""
    e_start = gl.load(rng + bucket * 2)
    e_stop = gl.load(rng + bucket * 2 + 1)
    n_tiles = gl.cdiv(e_stop - e_start, BM)
    first = 0
    if ROTATE:
        period = gl.maximum(gl.load(PERIOD + bucket), 1)
        phase = gl.cdiv(e_start, period) * period
        first = gl.where(phase < e_stop, (phase - e_start) // BM, 0)
    return e_start, e_stop, n_tiles, first


@gluon.jit
def _loader(
    K_DESC, V_DESC, Q, DO, ENT_ID, ENT_LO, ENT_HI, ent_stride, RANGES, PERIOD, LSE_IN, DLT,
    k_smem, v_smem, kv_ready, q_ring, do_ring, lse_ring, dlt_ring, lo_ring, hi_ring, ready, empty,
    sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, n_blocks, n_buckets,
    NJ: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, STAGES: gl.constexpr,
    Q_ROWS: gl.constexpr, ROTATE: gl.constexpr,
):
    """Four warps: the program's keys and values, then every tile's rows and per-entry values into the ring."""
    WARPS: gl.constexpr = 4
    CH: gl.constexpr = _CHUNK
    pid = gl.program_id(0)
    grp = gl.program_id(1)
    b = grp // H_KV
    row0 = grp * L_KV + pid * (2 * BN)
    mbarrier.expect(kv_ready, 4 * K_DESC.block_type.nbytes)
    _tma_load(K_DESC, [row0, 0], kv_ready, k_smem.index(0))
    _tma_load(K_DESC, [row0 + BN, 0], kv_ready, k_smem.index(1))
    _tma_load(V_DESC, [row0, 0], kv_ready, v_smem.index(0))
    _tma_load(V_DESC, [row0 + BN, 0], kv_ready, v_smem.index(1))

    rows_blk: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [WARPS, 1], [1, 0])
    vec: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    offs_c = gl.arange(0, CH, layout=gl.SliceLayout(1, rows_blk))
    offs_d = gl.arange(0, D, layout=gl.SliceLayout(0, rows_blk))
    offs_m = gl.arange(0, BM, layout=vec)
    rng = RANGES + (grp.to(gl.int64) * n_blocks + pid) * n_buckets * 2
    base = grp.to(gl.int64) * ent_stride
    it = 0
    for bucket in range(n_buckets):
        e_start, e_stop, n_tiles, first = _slice(RANGES, PERIOD, rng, bucket, BM, ROTATE)
        for i in range(n_tiles):
            t = first + i
            e0 = e_start + gl.where(t >= n_tiles, t - n_tiles, t) * BM
            slot = it % STAGES
            mbarrier.wait(empty.index(slot), ((it // STAGES) & 1) ^ 1)
            for c in gl.static_range(BM // CH):
                idx = e0 + c * CH + offs_c
                emask = idx < e_stop
                ent = gl.load(ENT_ID + base + idx, mask=emask, other=0)
                q_off, row = _rows(ent, b, NJ, Q_ROWS, H_Q, L_Q, sqb, sqh, sql)
                _gather(q_ring.index(slot).slice(c * CH, CH), Q + q_off[:, None] + offs_d[None, :],
                        mask=emask[:, None])
                _gather(do_ring.index(slot).slice(c * CH, CH), DO + row[:, None] * D + offs_d[None, :],
                        mask=emask[:, None])
            idx = e0 + offs_m
            emask = idx < e_stop
            ent = gl.load(ENT_ID + base + idx, mask=emask, other=0).to(gl.int64)
            _gather(lse_ring.index(slot), LSE_IN + ent, mask=emask)
            _gather(dlt_ring.index(slot), DLT + ent, mask=emask)
            _gather(lo_ring.index(slot), ENT_LO + base + idx, mask=emask)  # past the slice: 0, 0 with
            _gather(hi_ring.index(slot), ENT_HI + base + idx, mask=emask)  # a zero coefficient: no term
            async_copy.mbarrier_arrive(ready.index(slot), increment_count=False)
            it += 1


@gluon.jit
def _consumer(
    half, DK, DV, RANGES, PERIOD,
    k_smem, v_smem, kv_ready, q_ring, do_ring, lse_ring, dlt_ring, lo_ring, hi_ring, ready, empty,
    L_KV, n_blocks, n_buckets, sm_scale,
    D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, STAGES: gl.constexpr, ACCUMULATE: gl.constexpr,
    ROTATE: gl.constexpr,
):
    """One warp group: dk and dv of its BN keys over every tile of the program's scan, added to DK/DV or written."""
    WARPS: gl.constexpr = 4
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, BM, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, D, 16])
    a_dot: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_keys: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_ents: gl.constexpr = gl.SliceLayout(0, s_layout)
    edge_layout: gl.constexpr = gl.BlockedLayout([1, BM // 32], [1, 32], [WARPS, 1], [1, 0])
    dtype: gl.constexpr = k_smem.dtype
    pid = gl.program_id(0)
    grp = gl.program_id(1)
    k0 = pid * (2 * BN) + half * BN
    kidx = k0 + gl.arange(0, BN, layout=s_keys)
    qk_scale = sm_scale * LOG2E
    s_zero = gl.zeros([BN, BM], gl.float32, layout=s_layout)
    k_buf = k_smem.index(half)
    v_buf = v_smem.index(half)
    dk = gl.zeros([BN, D], gl.float32, layout=o_layout)
    dv = gl.zeros([BN, D], gl.float32, layout=o_layout)
    mbarrier.wait(kv_ready, 0)
    rng = RANGES + (grp.to(gl.int64) * n_blocks + pid) * n_buckets * 2
    it = 0
    for bucket in range(n_buckets):
        _, _, n_tiles, _ = _slice(RANGES, PERIOD, rng, bucket, BM, ROTATE)
        for _ in range(n_tiles):
            slot = it % STAGES
            mbarrier.wait(ready.index(slot), (it // STAGES) & 1)
            fence_async_shared()  # the loader's copies, seen by the products' reads of shared memory
            q_buf = q_ring.index(slot)
            do_buf = do_ring.index(slot)
            s_t = warpgroup_mma(k_buf, q_buf.permute((1, 0)), s_zero, use_acc=False, is_async=True)
            dp_t = warpgroup_mma(v_buf, do_buf.permute((1, 0)), s_zero, use_acc=False, is_async=True)
            # a tile whose every entry attends all of this consumer's keys skips the range mask. Each warp reads the
            # tile's first and last keys two a thread and reduces them in one instruction each (REDUX): in the scores'
            # layout (16 a thread, shuffles) the test cost 2-10% of the pass (benchmarks/NOTES.md item 44)
            lo_t = lo_ring.index(slot).reshape([1, BM]).load(edge_layout)
            hi_t = hi_ring.index(slot).reshape([1, BM]).load(edge_layout)
            edge = (gl.max(gl.max(lo_t, axis=1), axis=0) > k0) | (gl.min(gl.min(hi_t, axis=1), axis=0) < k0 + BN - 1)
            lse2 = lse_ring.index(slot).load(s_ents) * LOG2E
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s_t,))
            x = s * qk_scale - lse2[None, :]
            if edge:
                lo = lo_ring.index(slot).load(s_ents)
                hi = hi_ring.index(slot).load(s_ents)
                x = gl.where((kidx[:, None] >= lo[None, :]) & (kidx[:, None] <= hi[None, :]), x, float("-inf"))
            pc = gl.exp2(x)  # the probabilities times the entry's coefficient (folded into its log-sum-exp)
            dv_t = warpgroup_mma(gl.convert_layout(pc.to(dtype), a_dot), do_buf, dv, is_async=True)
            dlt = dlt_ring.index(slot).load(s_ents)
            dp = warpgroup_mma_wait(num_outstanding=1, deps=(dp_t,))
            dz = pc * (dp - dlt[None, :])
            dk_t = warpgroup_mma(gl.convert_layout(dz.to(dtype), a_dot), q_buf, dk, is_async=True)
            dv, dk = warpgroup_mma_wait(num_outstanding=0, deps=(dv_t, dk_t))
            mbarrier.arrive(empty.index(slot), count=1)
            it += 1

    o_keys: gl.constexpr = gl.SliceLayout(1, o_layout)
    kidx_o = k0 + gl.arange(0, BN, layout=o_keys)
    kin = kidx_o < L_KV
    out = (grp.to(gl.int64) * L_KV + kidx_o.to(gl.int64))[:, None] * D + gl.arange(0, D, layout=gl.SliceLayout(
        0, o_layout))[None, :]
    dk = dk * sm_scale
    if ACCUMULATE:
        dk += gl.load(DK + out, mask=kin[:, None], other=0.0)
        dv += gl.load(DV + out, mask=kin[:, None], other=0.0)
    gl.store(DK + out, dk, mask=kin[:, None])
    gl.store(DV + out, dv, mask=kin[:, None])


@gluon.jit
def _ws_dkdv_kernel(
    Q, K_DESC, V_DESC, DO,
    ENT_ID, ENT_LO, ENT_HI, ent_stride, RANGES, PERIOD,
    LSE_IN, DLT, DK, DV,
    sqb, sqh, sql,
    H_Q, H_KV, L_Q, L_KV, n_blocks, n_buckets, sm_scale,
    NJ: gl.constexpr, D: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, STAGES: gl.constexpr,
    REGS: gl.constexpr, LOADER_REGS: gl.constexpr, ACCUMULATE: gl.constexpr, Q_ROWS: gl.constexpr,
    ROTATE: gl.constexpr, num_warps: gl.constexpr,
):
    dtype: gl.constexpr = K_DESC.dtype
    rows_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BM, D], dtype)
    plain: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])  # of a slot
    k_smem = gl.allocate_shared_memory(dtype, [2, BN, D], K_DESC.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2, BN, D], V_DESC.layout)
    q_ring = gl.allocate_shared_memory(dtype, [STAGES, BM, D], rows_layout)
    do_ring = gl.allocate_shared_memory(dtype, [STAGES, BM, D], rows_layout)
    # per entry: log-sum-exp less the log of its coefficient, delta over the coefficient, first and last key
    lse_ring = gl.allocate_shared_memory(gl.float32, [STAGES, BM], plain)
    dlt_ring = gl.allocate_shared_memory(gl.float32, [STAGES, BM], plain)
    lo_ring = gl.allocate_shared_memory(gl.int32, [STAGES, BM], plain)
    hi_ring = gl.allocate_shared_memory(gl.int32, [STAGES, BM], plain)
    kv_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_ready, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=4 * 32)  # every loader thread arrives once its copies have landed
        mbarrier.init(empty.index(i), count=2)

    gl.warp_specialize([
        (_consumer, (0, DK, DV, RANGES, PERIOD, k_smem, v_smem, kv_ready, q_ring, do_ring, lse_ring, dlt_ring, lo_ring, hi_ring, ready,
                     empty, L_KV, n_blocks, n_buckets, sm_scale, D, BM, BN, STAGES, ACCUMULATE, ROTATE)),
        (_consumer, (1, DK, DV, RANGES, PERIOD, k_smem, v_smem, kv_ready, q_ring, do_ring, lse_ring, dlt_ring, lo_ring, hi_ring, ready,
                     empty, L_KV, n_blocks, n_buckets, sm_scale, D, BM, BN, STAGES, ACCUMULATE, ROTATE)),
        (_loader, (K_DESC, V_DESC, Q, DO, ENT_ID, ENT_LO, ENT_HI, ent_stride, RANGES, PERIOD, LSE_IN, DLT,
                   k_smem, v_smem, kv_ready, q_ring, do_ring, lse_ring, dlt_ring, lo_ring, hi_ring, ready, empty,
                   sqb, sqh, sql, H_Q, H_KV, L_Q, L_KV, n_blocks, n_buckets, NJ, D, BM, BN, STAGES, Q_ROWS, ROTATE)),
    ], [4, 4], [REGS, LOADER_REGS])


def dkdv_ws(
    entries: EntryList,
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor,
    lse_in: torch.Tensor, coef: torch.Tensor | None, delta: torch.Tensor,
    dk: torch.Tensor, dv: torch.Tensor, scale: float, accumulate: bool,
    tiles: tuple[int, ...] | None = None,
) -> None:
    """`attend_bwd.dkdv` on this kernel: contiguous 16-bit K and V, query rows with a contiguous last dim, a
    contiguous output gradient, head dim 128, a Hopper GPU."""
    from .attend_bwd import ROTATION  # the `tl` kernel's switch, shared so that comparisons flip both

    batch, heads_q, len_q, dim = q.shape
    heads_kv, len_kv = k.shape[1], k.shape[2]
    block_m, block_n, stages, regs, loader_regs = tiles or WS_DKDV_TILES
    k_desc, v_desc = kv_descriptors("dk/dv kernel", "K, V and output gradient", q, k, v, block_n, do)
    # the kernel takes the coefficient folded into the log-sum-exp and the delta (two per-entry values instead of
    # three): coef None when they come folded (`mix_bwd.mix`) or the coefficient is 1, else folded here
    lse_adj, dlt = (lse_in.contiguous(), delta.contiguous()) if coef is None else fold_coefficient(lse_in, coef, delta)
    ranges, period = block_ranges(entries, len_kv, 2 * block_n)
    n_blocks, n_buckets = ranges.shape[1], ranges.shape[2]
    # registers: twelve warps share the SM's 64K at 168 a thread; the default consumer gets what the second (regs)
    # and the loader (loader_regs) leave of 3 x 168
    _ws_dkdv_kernel[(n_blocks, batch * heads_kv)](
        q, k_desc, v_desc, do,
        entries.eid, entries.lo, entries.hi, entries.eid.stride(0), ranges, period,
        lse_adj, dlt, dk, dv,
        q.stride(0), q.stride(1), q.stride(2),
        heads_q, heads_kv, len_q, len_kv, n_blocks, n_buckets, scale,
        NJ=entries.nj, D=dim, BM=block_m, BN=block_n, STAGES=stages, REGS=regs, LOADER_REGS=loader_regs,
        ACCUMULATE=accumulate, Q_ROWS=rows_flat(q), ROTATE=ROTATION[0] == "on",
        num_warps=4, maxnreg=168,
    )
