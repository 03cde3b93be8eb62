"""Backward kernels that write key-side gradients: dk/dv per key block, and the router (gate) gradient.

`dkdv`: one program owns BN keys of one (batch, kv-head) group and walks only the slice of sorted
entries whose ranges can touch them (`block_ranges`), so dk and dv are summed in registers
and written once, with no atomics; window and span lists are two launches, the second adding to the first.

`gate_backward`: with the "anchor" search key ``d s_j / d q_search = k[a_j]`` and ``d s_j / d k[a_j] = q_search``;
the k side lands on scattered anchor rows, so it is added atomically into the float32 dk. With "span_mean",
``s_j = q_search . (P[hi + 1] - P[lo]) / n`` (P the running sums of K): ``d s_j / d q_search`` is the span's mean
key, rebuilt from the forward's sums, and every key of [lo, hi] receives ``q_search / n``. That range is written as
two rows of a difference buffer (``+ q_search / n`` at hi + 1, ``- q_search / n`` at lo, atomically), whose running
sums (`prefix.prefix_sums`, float64 across blocks) are the per-key gradients: O(1) work per span.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..geometry import span_tables, window_length
from .block_ranges import block_ranges
from .common import LOG2E, dot_precision, entry_rows, interpreting, launch_tiles, rows_flat, span_range
from .entries import EntryList
from .prefix import KeyPrefix, prefix_sums, span_sum_rows

__all__ = ["dkdv", "gate_backward"]

# "off" scans every key block's entries from the first (for same-run comparisons, benchmarks/profile_passes.py).
ROTATION = ["on"]


@triton.jit
def _dkdv_kernel(
    Q, K, V, DO,
    ENT_ID, ENT_LO, ENT_HI, ent_stride, RANGES, PERIOD,
    LSE_IN, COEF, DELTA, DK, DV,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    svb, svh, svl, svd,
    H_Q, H_KV, L_Q, L_KV, n_blocks, n_buckets, sm_scale,
    NJ: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    ACCUMULATE: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, Q_ROWS: tl.constexpr,
    ROTATE: tl.constexpr,
):
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    b = grp // H_KV
    kv = grp % H_KV
    kidx = pid * BN + tl.arange(0, BN)
    kin = kidx < L_KV
    offs_d = tl.arange(0, D)
    kb = tl.load(K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh + kidx.to(tl.int64)[:, None] * skl + offs_d[None, :] * skd,
                 mask=kin[:, None], other=0.0)
    vb = tl.load(V + b.to(tl.int64) * svb + kv.to(tl.int64) * svh + kidx.to(tl.int64)[:, None] * svl + offs_d[None, :] * svd,
                 mask=kin[:, None], other=0.0)
    if UPCAST:
        kb = kb.to(tl.float32)
        vb = vb.to(tl.float32)
    rng = RANGES + (grp.to(tl.int64) * n_blocks + pid) * n_buckets * 2
    base = grp.to(tl.int64) * ent_stride
    qk_scale = sm_scale * LOG2E
    dk = tl.zeros([BN, D], tl.float32)
    dv = tl.zeros([BN, D], tl.float32)
    for bucket in range(n_buckets):
        e_start = tl.load(rng + bucket * 2)
        e_stop = tl.load(rng + bucket * 2 + 1)
        n_tiles = tl.cdiv(e_stop - e_start, BM)
        # Neighbouring key blocks scan nearly the same entries. Each program starts its scan at the first
        # multiple of the bucket's longest slice, so programs running side by side read an entry at about the
        # same time and its query and output-gradient rows come from L2 rather than memory.
        first = 0
        if ROTATE:
            period = tl.maximum(tl.load(PERIOD + bucket), 1)
            phase = tl.cdiv(e_start, period) * period
            first = tl.where(phase < e_stop, (phase - e_start) // BM, 0)
        for i in range(0, n_tiles):
            t = first + i
            e0 = e_start + tl.where(t >= n_tiles, t - n_tiles, t) * BM
            idx = e0 + tl.arange(0, BM)
            emask = idx < e_stop
            ent = tl.load(ENT_ID + base + idx, mask=emask, other=0)
            lo = tl.load(ENT_LO + base + idx, mask=emask, other=1)
            hi = tl.load(ENT_HI + base + idx, mask=emask, other=0)
            q_off, row_flat, ent_flat = entry_rows(ent, b, sqb, sqh, sql, sqd, offs_d, H_Q, L_Q, NJ, Q_ROWS)
            q = tl.load(Q + q_off, mask=emask[:, None], other=0.0)
            do = tl.load(DO + row_flat[:, None] * D + offs_d[None, :], mask=emask[:, None], other=0.0)
            if UPCAST:
                q = q.to(tl.float32)
                do = do.to(tl.float32)
            lse2 = tl.load(LSE_IN + ent_flat, mask=emask, other=0.0) * LOG2E
            coef = tl.load(COEF + ent_flat, mask=emask, other=0.0)
            delta = tl.load(DELTA + ent_flat, mask=emask, other=0.0)
            s = tl.dot(q, tl.trans(kb), input_precision=PREC)  # [BM, BN], unscaled: one multiply-add below
            inside = (kidx[None, :] >= lo[:, None]) & (kidx[None, :] <= hi[:, None])  # padding: lo > hi
            p = tl.exp2(tl.where(inside, s * qk_scale - lse2[:, None], float("-inf")))
            pc = p * coef[:, None]
            dv += tl.dot(tl.trans(pc.to(do.dtype)), do, input_precision=PREC)
            dp = tl.dot(do, tl.trans(vb), input_precision=PREC)
            dz = p * (coef[:, None] * dp - delta[:, None])
            dk += tl.dot(tl.trans(dz.to(q.dtype)), q, input_precision=PREC)
    out = (grp.to(tl.int64) * L_KV + kidx.to(tl.int64))[:, None] * D + offs_d[None, :]
    dk = dk * sm_scale
    if ACCUMULATE:
        dk += tl.load(DK + out, mask=kin[:, None], other=0.0)
        dv += tl.load(DV + out, mask=kin[:, None], other=0.0)
    tl.store(DK + out, dk, mask=kin[:, None])
    tl.store(DV + out, dv, mask=kin[:, None])


def dkdv(
    entries: EntryList,
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor,
    lse_in: torch.Tensor, coef: torch.Tensor, delta: torch.Tensor,
    dk: torch.Tensor, dv: torch.Tensor, scale: float, accumulate: bool,
    tiles: tuple[int, ...] | None = None,
) -> None:
    """dk/dv (float32 [B, H_kv, L_kv, D], contiguous) of one entry list; `accumulate` adds to them."""
    batch, heads_q, len_q, dim = q.shape
    heads_kv, len_kv = k.shape[1], k.shape[2]
    block_m, block_n, launch = launch_tiles(tiles, dim, "dkdv")
    ranges, period = block_ranges(entries, len_kv, block_n)  # period, per bucket: the longest slice
    n_blocks, n_buckets = ranges.shape[1], ranges.shape[2]
    grid = (n_blocks, batch * heads_kv)
    _dkdv_kernel[grid](
        q, k, v, do,
        entries.eid, entries.lo, entries.hi, entries.eid.stride(0), ranges, period,
        lse_in, coef, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(),
        heads_q, heads_kv, len_q, len_kv, n_blocks, n_buckets, scale,
        NJ=entries.nj, D=dim, BM=block_m, BN=block_n, ACCUMULATE=accumulate, Q_ROWS=rows_flat(q),
        ROTATE=ROTATION[0] == "on",
        PREC=dot_precision(q.dtype), UPCAST=interpreting() or q.dtype == torch.float32,
        **launch,
    )


@triton.jit
def _gate_bwd_kernel(
    QS, K, ANCH, DS, DQS, DK, PRE, THIRD, SCALE, CENTER, POS, S0, BACK, FWD,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    H_Q, H_KV, L_Q, L_KV, G, width, t_cap,
    D: tl.constexpr, BR: tl.constexpr, KSEL: tl.constexpr, SPAN_MEAN: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H_Q
    h = bh % H_Q
    kv = h // G
    r = pid * BR + tl.arange(0, BR)
    rmask = r < L_Q
    offs_d = tl.arange(0, D)
    qs = tl.load(QS + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + r.to(tl.int64)[:, None] * sql + offs_d[None, :] * sqd,
                 mask=rmask[:, None], other=0.0).to(tl.float32)
    row_flat = bh.to(tl.int64) * L_Q + r
    dqs = tl.zeros([BR, D], tl.float32)
    k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh
    grp = (b * H_KV + kv).to(tl.int64)
    if SPAN_MEAN:  # DK: the [B * H_kv, L_kv + 1, D] difference buffer; PRE: the forward's float16 pairs
        dk_base = DK + grp * (L_KV + 1) * D
        p_base = PRE + grp * (L_KV + 1) * (2 * D)
        t_base = THIRD + grp * (L_KV + 1) * D
        inv_scale = 1.0 / tl.load(SCALE + grp)
        center = tl.load(CENTER + grp * D + offs_d)
        pos = tl.load(POS + r, mask=rmask, other=0).to(tl.int64)
        s0 = tl.load(S0 + b).to(tl.int64)
        tc = tl.minimum(tl.maximum(pos + 1 - s0, 0), t_cap)
        back = tl.load(BACK + tc, mask=rmask, other=0)
        fwd = tl.load(FWD + tc, mask=rmask, other=0)
    else:
        dk_base = DK + grp * L_KV * D
    for jj in tl.static_range(KSEL):
        a = tl.load(ANCH + row_flat * KSEL + jj, mask=rmask, other=-1).to(tl.int64)
        ds = tl.load(DS + row_flat * KSEL + jj, mask=rmask, other=0.0)
        ok = rmask & (a >= 0)
        if SPAN_MEAN:
            lo, hi = span_range(a, back, fwd, s0, pos, width)
            lo = tl.where(ok, lo, 0)
            end = tl.where(ok, hi + 1, 0)
            inv_n = tl.where(ok, 1.0 / tl.maximum(end - lo, 1).to(tl.float32), 0.0)
            span_sum = span_sum_rows(p_base, t_base, end, lo, offs_d, ok, D)
            dqs += ds[:, None] * (span_sum * (inv_n * inv_scale)[:, None] + center[None, :])  # the mean key
            share = (ds * inv_n)[:, None] * qs
            tl.atomic_add(dk_base + end[:, None] * D + offs_d[None, :], share, mask=ok[:, None], sem="relaxed")
            tl.atomic_add(dk_base + lo[:, None] * D + offs_d[None, :], -share, mask=ok[:, None], sem="relaxed")
        else:
            krow = tl.load(k_base + a[:, None] * skl + offs_d[None, :] * skd, mask=ok[:, None], other=0.0)
            dqs += ds[:, None] * krow.to(tl.float32)
            tl.atomic_add(dk_base + a[:, None] * D + offs_d[None, :], ds[:, None] * qs, mask=ok[:, None], sem="relaxed")
    tl.store(DQS + row_flat[:, None] * D + offs_d[None, :], dqs.to(DQS.dtype.element_ty), mask=rmask[:, None])


def gate_backward(q_search: torch.Tensor, k: torch.Tensor, anchors: torch.Tensor, dscore: torch.Tensor,
                  dk: torch.Tensor, *, prefix: KeyPrefix | None = None, config=None, positions=None,
                  first_real=None) -> torch.Tensor:
    """d q_search (q_search's dtype, contiguous) from the score gradients; adds the k side into `dk`.

    With `prefix` (the forward's `prefix.key_prefix`, "span_mean" search key) `config`, `positions` and
    `first_real` give each selected span's key range, and the k side reaches every key of it."""
    batch, heads_q, len_q, dim = q_search.shape
    heads_kv, len_kv = k.shape[1], k.shape[2]
    dqs = torch.empty(batch, heads_q, len_q, dim, dtype=q_search.dtype, device=q_search.device)
    block_r = 16 if interpreting() else 32
    grid = (triton.cdiv(len_q, block_r), batch * heads_q)
    span_mean = prefix is not None
    if span_mean:
        target = torch.zeros(batch, heads_kv, len_kv + 1, dim, dtype=torch.float32, device=dk.device)
        tables = span_tables(config, max(len_kv, 1), q_search.device)
        extra = (prefix.pairs, prefix.third, prefix.scale, prefix.center, positions, first_real, tables.back,
                 tables.fwd)
        width, t_cap = window_length(config), tables.back.numel() - 1
    else:
        target = dk
        extra = (dk,) * 8  # not read
        width, t_cap = 0, 0
    _gate_bwd_kernel[grid](
        q_search, k, anchors, dscore, dqs, target, *extra,
        *q_search.stride(), *k.stride(),
        heads_q, heads_kv, len_q, len_kv, heads_q // heads_kv, width, t_cap,
        D=dim, BR=block_r, KSEL=anchors.shape[-1], SPAN_MEAN=span_mean, num_warps=4 if not interpreting() else 1,
    )
    if span_mean:
        # key x lies in [lo, hi] iff lo <= x < hi + 1: its gradient is minus the running sum of the buffer up to x
        dk.sub_(prefix_sums(target)[:, :, 1:len_kv + 1])
    return dqs
