"""Router search: the score of every candidate anchor and the top-k, in one kernel.

One program handles one query row and one key/value head. The group's query heads share the searched keys, so
the scores of all of them are one ``[heads x D] @ [D x anchors]`` product per block of anchors (heads are padded
to 16 rows for the tensor cores). The top-k is merged block by block into a running list, so the full score row
is never written to memory. Candidates are ``pos + 1 - o(i)`` with o(i) from `slkernels.geometry.anchor_table`
(exact integers from the host), valid while ``o(i) <= t``.

The searched key of a candidate (docs/semantics.md, "Search key") is a compile-time switch:

- "anchor": the anchor's own key row, ``k[a]``;
- "span_mean": the mean key of the span the anchor opens, ``(P[hi + 1] - P[lo]) / n`` from the running sums of
  `prefix.key_prefix` (two rows per candidate whatever the span's length; [lo, hi] from `span_range`). Each row is
  stored as two float16 parts, so with 16-bit inputs a block's scores are tensor-core products (q_search scaled by
  a power of two into float16's range) into a float32 accumulator, then one scale per column (1 / (n scale)): the
  gathered rows need no conversion. The hi parts of both ends come first; the lo parts (the last 11 bits) are read
  only for candidates whose score could still reach some head's k-th best, given a per-row bound of what they add
  (`KeyPrefix.lo_bound`, a few hundredths of the scores' spread): the whole first block, then about 3 G / m of the
  candidates after the m-th (G heads share the load), so a candidate costs between two and four 16-bit rows where
  the anchor key costs one. The sums are centred, so ``q_search . center`` (once per row) completes each score; the
  ranking runs without it (it is the same for every candidate).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..config import SuperlinearConfig
from ..geometry import anchor_table, span_tables, window_length
from .common import dot_precision, interpreting, span_range
from .prefix import KeyPrefix, key_prefix

__all__ = ["search_topk", "SEARCH_TILES"]

# (anchors per block, warps, pipeline stages) of the search on a GPU, per search key. "anchor": measured on an H200
# (benchmarks/NOTES.md, items 3, 11 and 12). "span_mean" (two to four 16-bit rows per candidate instead of one): the
# anchor's tiling, not yet timed; benchmarks/sass_report.py search:span_mean shows its sm_90 code. Heads of D > 128
# take 16 anchors per block.
SEARCH_TILES = {"anchor": (32, 1, 2), "span_mean": (32, 1, 2)}
# "span_mean": "off" reads the lo parts of every candidate (for same-run comparisons; the result is the same).
LAZY_LO = ["on"]


@triton.jit
def _count_reachable(OFFS, n_offsets, t, first_index, power):
    """How many table offsets are <= t. o(i) <= t iff i < (t + 1)^p, so a float estimate lands within one of
    the answer; two scalar walks over the (L1-resident) table make it exact whatever the rounding."""
    est = tl.exp2(power * tl.log2(tl.maximum(t, 0).to(tl.float32) + 1.0))
    n = tl.minimum(tl.maximum(tl.ceil(est).to(tl.int32) - first_index, 0), n_offsets)
    while (n > 0) & (tl.load(OFFS + n - 1, mask=n > 0, other=0) > t):
        n -= 1
    while (n < n_offsets) & (tl.load(OFFS + n, mask=n < n_offsets, other=0) <= t):
        n += 1
    return n


@triton.jit
def _fp16_range(amax):
    """Powers of two (f, 1 / f) with ``amax * f`` in [2^13, 2^14) (f = 1 where amax is 0), from the exponent bits: a
    16-bit row times f is exact in float16 (components below amax * 2^-27 excepted, which cannot matter)."""
    exponent = ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    f_exp = tl.minimum(tl.maximum(tl.where(amax > 0, 13 - exponent, 0), -126), 126)
    return ((f_exp + 127) << 23).to(tl.float32, bitcast=True), ((127 - f_exp) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _search_kernel(
    QS, K, PRE, SCALE, CENTER, BOUND, BACK, FWD, OFFS, POS, S0, ANCH, SCORE,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    n_offsets, first_index, power, H_Q, H_KV, L_Q, G, per_split, n_splits, width, t_cap, pre_rows,
    D: tl.constexpr, GP: tl.constexpr, BN: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr, SPAN_MEAN: tl.constexpr, LAZY_LO: tl.constexpr,
):
    row = tl.program_id(0)
    grp = tl.program_id(1)
    split = tl.program_id(2)
    b = grp // H_KV
    kv = grp % H_KV
    pos = tl.load(POS + row).to(tl.int32)
    s0 = tl.load(S0 + b).to(tl.int32)
    t = pos + 1 - s0

    heads = tl.arange(0, GP)
    hmask = heads < G
    h = kv * G + heads
    offs_d = tl.arange(0, D)
    qs_ptr = QS + b.to(tl.int64) * sqb + h.to(tl.int64)[:, None] * sqh + row.to(tl.int64) * sql + offs_d[None, :] * sqd
    qs = tl.load(qs_ptr, mask=hmask[:, None], other=0.0)
    if UPCAST:
        qs = qs.to(tl.float32)
    k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh
    if SPAN_MEAN:
        tc = tl.minimum(tl.maximum(t, 0), t_cap)
        back = tl.load(BACK + tc).to(tl.int32)
        fwd = tl.load(FWD + tc).to(tl.int32)
        p_base = PRE + grp.to(tl.int64) * pre_rows * (2 * D)  # float16 pairs [B * H_kv, L_kv + 1, 2, D]
        b_base = BOUND + grp.to(tl.int64) * pre_rows
        inv_scale = 1.0 / tl.load(SCALE + grp)  # a power of two: exact
        center = tl.load(CENTER + grp.to(tl.int64) * D + offs_d)
        q32 = qs.to(tl.float32)
        q_center = tl.sum(q32 * center[None, :], axis=1)  # [GP]: q_search . center
        q_norm = tl.sqrt(tl.sum(q32 * q32, axis=1)) * 1.001  # [GP], with a margin for rounding
        if UPCAST:
            q_op = q32
            q_unscale = tl.full([GP], 1.0, tl.float32)
        else:  # q_search scaled by a power of two into float16's range: exact for bf16 and fp16 inputs
            q_scale, q_unscale = _fp16_range(tl.max(tl.abs(q32), axis=1))
            q_op = (q32 * q_scale[:, None]).to(tl.float16)
        neg_q_op = -q_op

    cols = tl.arange(0, KP)
    block_cols = tl.arange(0, BN)
    # Running top-k per head, unordered; padding columns hold +inf so that they are never the minimum.
    best_v = tl.where(cols[None, :] < KSEL, float("-inf"), float("inf")) + tl.zeros([GP, KP], tl.float32)
    best_i = tl.full([GP, KP], -1, tl.int32)
    kth = tl.full([GP], float("-inf"), tl.float32)  # smallest kept score per head
    # Offsets are sorted: the ones this row can reach are a prefix of the table, so validity is an index test.
    first = split * per_split
    last = tl.minimum(_count_reachable(OFFS, n_offsets, t, first_index, power), first + per_split)
    for n0 in range(first, last, BN):
        # Columns past the last reachable offset repeat it: every load stays in bounds without a mask (a
        # masked load costs a zeroing per register), and the scores of those columns are dropped below.
        off = tl.load(OFFS + tl.minimum(n0 + block_cols, last - 1)).to(tl.int32)
        anchor = pos + 1 - off
        if SPAN_MEAN:
            lo, hi = span_range(anchor, back, fwd, s0, pos, width)  # lo <= anchor <= hi: never empty
            if WIDE:
                end_row = (hi + 1).to(tl.int64)
                start_row = lo.to(tl.int64)
            else:
                end_row = hi + 1
                start_row = lo
            col_scale = inv_scale / (hi - lo + 1).to(tl.float32)  # [BN]: 1 / (scale n)
            end_hi = tl.load(p_base + (end_row * (2 * D))[None, :] + offs_d[:, None])  # [D, BN]
            start_hi = tl.load(p_base + (start_row * (2 * D))[None, :] + offs_d[:, None])
            s = tl.dot(q_op, end_hi.to(q_op.dtype), input_precision=PREC)
            s = tl.dot(neg_q_op, start_hi.to(q_op.dtype), s, input_precision=PREC)
            s = s * q_unscale[:, None] * col_scale[None, :]  # the score from the hi parts
            # What the lo parts could add, at most: only candidates that could still reach some head's k-th score
            # load them (all of the first block; later, those some head of the group could still take).
            reach = (tl.load(b_base + end_row) + tl.load(b_base + start_row)) * col_scale
            open_col = tl.max(((s + q_norm[:, None] * reach[None, :] >= kth[:, None]) & hmask[:, None]).to(tl.int32),
                              axis=0) > 0
            open_col = open_col & (n0 + block_cols < last)
            if not LAZY_LO:
                open_col = n0 + block_cols >= 0  # every column
            if tl.max(open_col.to(tl.int32), axis=0) > 0:
                end_lo = tl.load(p_base + (end_row * (2 * D) + D)[None, :] + offs_d[:, None], mask=open_col[None, :],
                                 other=0.0)
                start_lo = tl.load(p_base + (start_row * (2 * D) + D)[None, :] + offs_d[:, None],
                                   mask=open_col[None, :], other=0.0)
                fix = tl.dot(q_op, end_lo.to(q_op.dtype), input_precision=PREC)
                fix = tl.dot(neg_q_op, start_lo.to(q_op.dtype), fix, input_precision=PREC)
                s += fix * q_unscale[:, None] * col_scale[None, :]
        else:
            if WIDE:
                key_off = anchor.to(tl.int64) * skl
            else:
                key_off = anchor * skl
            kt = tl.load(k_base + key_off[None, :] + offs_d[:, None] * skd)
            if UPCAST:
                kt = kt.to(tl.float32)
            s = tl.dot(qs, kt, input_precision=PREC)
        # (padding heads score 0 everywhere and are never stored, so only columns need masking)
        s = tl.where((n0 + block_cols < last)[None, :], s, float("-inf"))
        # Insert the block's maximum into every head whose k-th score it beats, until no head has such a
        # candidate left: late in a row most blocks need no round or one, instead of k merge rounds. Columns
        # hold decreasing anchors, so the first column among equal scores is the larger anchor, and keeping
        # the incumbent on equal scores prefers larger anchors (blocks come in decreasing anchor order).
        m1 = tl.max(s, axis=1)
        for _ in tl.static_range(KSEL):  # a block adds at most k scores to a head; most add none or one
            if tl.max((m1 > kth).to(tl.int32), axis=0) > 0:
                take = m1 > kth
                c1 = tl.min(tl.where(s == m1[:, None], block_cols[None, :], BN), axis=1)
                i1 = pos + 1 - tl.load(OFFS + n0 + c1, mask=take, other=0).to(tl.int32)
                # evict the smallest kept score, and among equals the smallest anchor
                low = tl.min(tl.where(best_v == kth[:, None], best_i, 2147483647), axis=1)
                c = tl.min(tl.where((best_v == kth[:, None]) & (best_i == low[:, None]), cols[None, :], KP), axis=1)
                slot = take[:, None] & (cols[None, :] == c[:, None])
                best_v = tl.where(slot, m1[:, None], best_v)
                best_i = tl.where(slot, i1[:, None], best_i)
                s = tl.where(take[:, None] & (block_cols[None, :] == c1[:, None]), float("-inf"), s)
                kth = tl.min(best_v, axis=1)
                m1 = tl.max(s, axis=1)

    # Output in descending score order, larger anchors first on equal scores (as the reference ranks).
    best_v = tl.where(cols[None, :] < KSEL, best_v, float("-inf"))
    out_v = tl.full([GP, KP], float("-inf"), tl.float32)
    out_i = tl.full([GP, KP], -1, tl.int32)
    for j in tl.static_range(KSEL):
        m = tl.max(best_v, axis=1)
        top = tl.max(tl.where(best_v == m[:, None], best_i, -1), axis=1)
        out_v = tl.where(cols[None, :] == j, m[:, None], out_v)
        out_i = tl.where(cols[None, :] == j, tl.where(m == float("-inf"), -1, top)[:, None], out_i)
        best_v = tl.where((best_v == m[:, None]) & (best_i == top[:, None]), float("-inf"), best_v)

    if SPAN_MEAN:  # scores were ranked without the row's common term q_search . center; add it back
        out_v = out_v + q_center[:, None]
    out_row = (((b * H_Q + h).to(tl.int64) * L_Q + row) * n_splits + split) * KSEL
    out_ptr = out_row[:, None] + cols[None, :]
    omask = hmask[:, None] & (cols[None, :] < KSEL)
    tl.store(ANCH + out_ptr, out_i, mask=omask)
    tl.store(SCORE + out_ptr, tl.where(out_i >= 0, out_v, 0.0), mask=omask)


def search_topk(
    q_search: torch.Tensor,
    k: torch.Tensor,
    config: SuperlinearConfig,
    positions: torch.Tensor,
    first_real: torch.Tensor,
    t_bound: int,
    *,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    split_candidates: int | None = None,
    prefix: KeyPrefix | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected anchors (int32 [B, H_q, L_q, k], -1 = none) and their float32 scores (0 where none).

    `t_bound` is a host-side upper bound of t (L_kv works); no value is read back from the device, so the
    call can be captured in a CUDA graph once the anchor table has been cached on the device.
    `split_candidates`: with few query rows (decode) one program per row would walk thousands of
    anchors alone; the candidates are then cut into pieces of this many, searched in parallel, and the
    pieces' top-k lists merged with one stable sort.
    `prefix`: `prefix.key_prefix(k, first_real)` for the "span_mean" key (built here when not given); block size,
    warps and stages default to `SEARCH_TILES` of the config's search key.
    """
    batch, heads_q, len_q, dim = q_search.shape
    heads_kv = k.shape[1]
    group = heads_q // heads_kv
    ksel = config.num_spans
    offsets = anchor_table(config, max(t_bound, 1), q_search.device)
    n_off = offsets.numel()
    n_splits = 1 if not split_candidates else max(1, triton.cdiv(n_off, split_candidates))
    per_split = triton.cdiv(max(n_off, 1), n_splits)
    anchors = torch.empty(batch, heads_q, len_q, n_splits * ksel, dtype=torch.int32, device=q_search.device)
    scores = torch.empty(batch, heads_q, len_q, n_splits * ksel, dtype=torch.float32, device=q_search.device)
    if len_q == 0:
        return anchors[..., :ksel], scores[..., :ksel]
    if n_off == 0:
        offsets = torch.ones(1, dtype=torch.int64, device=q_search.device)
    gp = max(16, triton.next_power_of_2(group))
    span_mean = config.search_key == "span_mean"
    tile_n, warps, stages = SEARCH_TILES[config.search_key]
    if block_n is None:
        block_n = 16 if interpreting() or (span_mean and dim > 128) else tile_n
    wide = k.shape[2] * max(k.stride(2), 1) + dim * max(k.stride(3), 1) >= 2**31
    if span_mean:
        if prefix is None:
            prefix = key_prefix(k, first_real)
        tables = span_tables(config, max(t_bound, 1), q_search.device)
        pre, scale, center, bound = prefix.pairs, prefix.scale, prefix.center, prefix.lo_bound
        back, fwd = tables.back, tables.fwd
        wide = wide or (k.shape[2] + 1) * 2 * dim >= 2**31
    else:
        pre = scale = center = bound = back = fwd = offsets  # not read
    grid = (len_q, batch * heads_kv, n_splits)
    _search_kernel[grid](
        q_search, k, pre, scale, center, bound, back, fwd, offsets, positions, first_real, anchors, scores,
        *q_search.stride(), *k.stride(),
        n_off, config.sw_index + 1, config.search_power, heads_q, heads_kv, len_q, group, per_split, n_splits,
        window_length(config), back.numel() - 1, k.shape[2] + 1,
        D=dim, GP=gp, BN=block_n, KSEL=ksel, KP=triton.next_power_of_2(ksel),
        PREC=dot_precision(q_search.dtype), UPCAST=interpreting() or q_search.dtype == torch.float32,
        WIDE=wide, SPAN_MEAN=span_mean, LAZY_LO=LAZY_LO[0] == "on",
        num_warps=warps if num_warps is None else num_warps, num_stages=stages if num_stages is None else num_stages,
    )
    if n_splits == 1:
        return anchors, scores
    # Pieces hold decreasing anchors, each sorted by (score, anchor) descending: a stable sort keeps larger
    # anchors first on equal scores, as within one piece.
    ranked = scores.masked_fill(anchors < 0, float("-inf"))
    top = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :ksel]
    return anchors.gather(-1, top).contiguous(), scores.gather(-1, top).contiguous()
