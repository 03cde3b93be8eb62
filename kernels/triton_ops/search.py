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
  gathered rows need no conversion: four 16-bit rows per candidate (hi and lo parts of both ends) where the anchor
  key reads one. The sums are centred, so ``q_search . center`` (once per row) completes each score; the ranking
  runs without it (it is the same for every candidate).

  Those products add large terms that cancel (the two ends of a span) in a float32 accumulator, and the sums
  keep 22 bits: a score is off by up to about 2^-22 |q_search| (|P[hi + 1]| + |P[lo]|) / n, enough to swap two
  candidates whose scores nearly tie. The running list therefore keeps k + 1 candidates; where a head's k-th and
  (k+1)-th kept scores lie within a generous bound of it of each other (``RESCORE_MARGIN`` = 2^-14 in place of
  2^-22, row norms from `KeyPrefix.norm`), its kept candidates are scored again from all three float16 parts of the sums (33 bits), each part's
  difference between the two ends taken on its own in float32, then one float32 dot product, before the top k
  are taken. The selection then differs from the exact one only where two candidates outside the top k both tie
  with the k-th to within the products' error.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..config import SuperlinearConfig
from ..geometry import anchor_table, span_tables, window_length
from .common import cdiv, dot_precision, interpreting, next_pow2, span_range
from .prefix import KeyPrefix, key_prefix, span_sum_rows

__all__ = ["search_topk", "SEARCH_TILES"]

# (anchors per block, warps, pipeline stages) of the search on a GPU, per search key, measured on an H200.
# "anchor": benchmarks/NOTES.md, items 3, 11 and 12. "span_mean" (four 16-bit rows per candidate): the best of five
# tilings at 256K, 32 query / 2 kv heads, D = 128 (item 14: 54.6 ms released, 33.0 balanced, against 67.7 and 42.1
# with the anchor's tiling). Heads of D > 128 take 16 anchors per block.
SEARCH_TILES = {"anchor": (32, 1, 2), "span_mean": (16, 1, 2)}
# "span_mean": a bound of the error of a score from the 16-bit products, relative to |q_search| (|P[hi + 1]| +
# |P[lo]|) / n, for D <= 128 (twice that for D = 256): the sums' 22 bits (2^-22) plus a float32 accumulator rounded
# or truncated once per step of 4 to 16 products (below about 2^-16 at D = 128); 2^-14 leaves a factor of four.
RESCORE_MARGIN = 2.0**-14


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
def _sum_rows(lo, hi, WIDE: tl.constexpr):
    """Rows of the running sums whose difference is the sum of keys lo..hi: (hi + 1, lo), in int64 when WIDE."""
    end, start = hi + 1, lo
    if WIDE:
        end, start = end.to(tl.int64), start.to(tl.int64)
    return end, start


@triton.jit
def _noise(anchor, heads):
    """Test hook: a fixed pseudo-random number in [-1, 1) per (head, anchor)."""
    u = tl.sin(anchor.to(tl.float32)[None, :] * 12.9898 + heads.to(tl.float32)[:, None] * 78.233) * 43758.5453
    return 2.0 * (u - tl.floor(u)) - 1.0


@triton.jit
def _search_kernel(
    QS, K, PRE, THIRD, SCALE, CENTER, NORM, BACK, FWD, OFFS, POS, S0, ANCH, SCORE,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    n_offsets, first_index, power, H_Q, H_KV, L_Q, G, per_split, n_splits, width, t_cap, pre_rows, margin,
    D: tl.constexpr, GP: tl.constexpr, BN: tl.constexpr, KSEL: tl.constexpr, KEEP: tl.constexpr, KP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr, SPAN_MEAN: tl.constexpr, RESCORE: tl.constexpr,
    RESCORE_ALL: tl.constexpr, DC: tl.constexpr, NOISE: tl.constexpr, HI_ONLY: tl.constexpr, TRIGGER: tl.constexpr,
    REACH_BY_MASK: tl.constexpr,
):
    if TRIGGER:  # the kernel launched after this one (decode's partial kernel) may start now: see decode.DECODE_PDL
        tl.extra.cuda.gdc_launch_dependents()
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
    qs_row = QS + b.to(tl.int64) * sqb + h.to(tl.int64)[:, None] * sqh + row.to(tl.int64) * sql
    qs = tl.load(qs_row + offs_d[None, :] * sqd, mask=hmask[:, None], other=0.0)
    if UPCAST:
        qs = qs.to(tl.float32)
    k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh
    if SPAN_MEAN:
        tc = tl.minimum(tl.maximum(t, 0), t_cap)
        back = tl.load(BACK + tc).to(tl.int32)
        fwd = tl.load(FWD + tc).to(tl.int32)
        p_base = PRE + grp.to(tl.int64) * pre_rows * (2 * D)  # float16 pairs [B * H_kv, pre_rows >= L_kv + 1, 2, D]
        n_base = NORM + grp.to(tl.int64) * pre_rows
        t_base = THIRD + grp.to(tl.int64) * pre_rows * D  # float16 third parts [B * H_kv, pre_rows, D]
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
    # Running top-KEEP per head, unordered; padding columns hold +inf so that they are never the minimum.
    best_v = tl.where(cols[None, :] < KEEP, float("-inf"), float("inf")) + tl.zeros([GP, KP], tl.float32)
    best_i = tl.full([GP, KP], -1, tl.int32)
    kth = tl.full([GP], float("-inf"), tl.float32)  # smallest kept score per head
    # Offsets are sorted: the ones this row can reach are a prefix of the table, so validity is an index test.
    # REACH_BY_MASK (short pieces, decode): the piece's whole slice of the table is walked and each offset tested
    # against t instead, so that the first loads of offsets and keys need not wait for the count's walks (two
    # dependent loads after t's) on the step's critical path; a piece past the row's reach costs a masked block.
    first = split * per_split
    if REACH_BY_MASK:
        last = tl.minimum(n_offsets, first + per_split)
    else:
        last = tl.minimum(_count_reachable(OFFS, n_offsets, t, first_index, power), first + per_split)
    for n0 in range(first, last, BN):
        # Columns past the last offset repeat it: every load stays in bounds without a mask (a masked load costs a
        # zeroing per register), and the scores of those columns are dropped below.
        off = tl.load(OFFS + tl.minimum(n0 + block_cols, last - 1)).to(tl.int32)
        live = n0 + block_cols < last
        if REACH_BY_MASK:  # an offset past t would name a key before s0: such columns read the query's own key
            live = live & (off <= t)
            off = tl.where(off <= t, off, 1)
        anchor = pos + 1 - off
        if SPAN_MEAN:
            lo, hi = span_range(anchor, back, fwd, s0, pos, width)  # lo <= anchor <= hi: never empty
            end_row, start_row = _sum_rows(lo, hi, WIDE)
            col_scale = inv_scale / (hi - lo + 1).to(tl.float32)  # [BN]: 1 / (scale n)
            end_ptr = p_base + (end_row * (2 * D))[None, :] + offs_d[:, None]  # [D, BN]: hi; lo D further on
            start_ptr = p_base + (start_row * (2 * D))[None, :] + offs_d[:, None]
            # hi parts of both ends, then lo parts, into one float32 accumulator
            s = tl.dot(q_op, tl.load(end_ptr).to(q_op.dtype), input_precision=PREC)
            s = tl.dot(neg_q_op, tl.load(start_ptr).to(q_op.dtype), s, input_precision=PREC)
            if not HI_ONLY:  # HI_ONLY (timing of a screening loop, docs/semantics.md): the hi parts alone
                s = tl.dot(q_op, tl.load(end_ptr + D).to(q_op.dtype), s, input_precision=PREC)
                s = tl.dot(neg_q_op, tl.load(start_ptr + D).to(q_op.dtype), s, input_precision=PREC)
            s = s * q_unscale[:, None] * col_scale[None, :]
            if NOISE > 0.0:  # tests: an error of up to NOISE times the bound that the rescoring below assumes
                bound = (tl.load(n_base + end_row) + tl.load(n_base + start_row)) * col_scale
                s += NOISE * margin * q_norm[:, None] * bound[None, :] * _noise(anchor, heads)
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
        s = tl.where(live[None, :], s, float("-inf"))
        # Insert the block's maximum into every head whose smallest kept score it beats, until no head has such a
        # candidate left: late in a row most blocks need no round or one, instead of KEEP merge rounds. Columns
        # hold decreasing anchors, so the first column among equal scores is the larger anchor, and keeping
        # the incumbent on equal scores prefers larger anchors (blocks come in decreasing anchor order).
        m1 = tl.max(s, axis=1)
        for _ in tl.static_range(KEEP):  # a block adds at most KEEP scores to a head; most add none or one
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

    if SPAN_MEAN:
        if RESCORE:
            # A head's selection can only change where its k-th and (k+1)-th kept scores lie within the products'
            # error bound of each other; there (or everywhere, with RESCORE_ALL: split pieces are merged by score)
            # the kept candidates are scored again from all three parts of the sums (module docstring).
            live = best_i >= 0
            lo_k, hi_k = span_range(tl.where(live, best_i, pos - width), back, fwd, s0, pos, width)
            end_k, start_k = _sum_rows(lo_k, hi_k, WIDE)
            scale_k = inv_scale / tl.maximum(hi_k - lo_k + 1, 1).to(tl.float32)  # [GP, KP]
            norms = tl.load(n_base + end_k, mask=live, other=0.0) + tl.load(n_base + start_k, mask=live, other=0.0)
            err = tl.max(margin * q_norm[:, None] * norms * scale_k, axis=1)  # [GP]: bound of a kept score's error
            v_low = tl.min(best_v, axis=1)  # the (k+1)-th kept score (padding columns hold +inf)
            c_low = tl.min(tl.where(best_v == v_low[:, None], cols[None, :], KP), axis=1)
            v_kth = tl.min(tl.where(cols[None, :] == c_low[:, None], float("inf"), best_v), axis=1)  # the k-th
            gap = v_kth - tl.maximum(v_low, -3.0e38)  # (no inf - inf)
            redo = hmask & (gap <= 2.0 * err) & (v_low > float("-inf"))
            if RESCORE_ALL:
                redo = hmask
            if tl.max(redo.to(tl.int32), axis=0) > 0:
                for j in tl.static_range(KEEP):
                    pick = cols[None, :] == j
                    need = redo & (tl.max(tl.where(pick & live, 1, 0), axis=1) > 0)
                    e_j = tl.sum(tl.where(pick, end_k, 0), axis=1)  # [GP]
                    s_j = tl.sum(tl.where(pick, start_k, 0), axis=1)
                    exact = tl.zeros([GP], tl.float32)
                    for d0 in tl.static_range(0, D, DC):
                        dd = d0 + tl.arange(0, DC)
                        diff = span_sum_rows(p_base, t_base, e_j, s_j, dd, need, D)  # [GP, DC] (DC divides D)
                        q_d = tl.load(qs_row + dd[None, :] * sqd, mask=need[:, None], other=0.0).to(tl.float32)
                        exact += tl.sum(q_d * diff, axis=1)
                    exact = exact * tl.sum(tl.where(pick, scale_k, 0.0), axis=1)
                    best_v = tl.where(pick & need[:, None], exact[:, None], best_v)

    # Output in descending score order, larger anchors first on equal scores (as the reference ranks).
    best_v = tl.where(cols[None, :] < KEEP, best_v, float("-inf"))
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
    rescore: bool = True,
    margin: float | None = None,
    noise: float = 0.0,
    hi_only: bool = False,
    merge: bool = True,
    launch_dependents: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected anchors (int32 [B, H_q, L_q, k], -1 = none) and their float32 scores (0 where none).

    `t_bound` is a host-side upper bound of t (L_kv works); no value is read back from the device, so the
    call can be captured in a CUDA graph once the anchor table has been cached on the device.
    `split_candidates`: with few query rows (decode) one program per row would walk thousands of
    anchors alone; the candidates are then cut into pieces of this many, searched in parallel, and the
    pieces' top-k lists merged with one stable sort. `merge=False` returns the pieces unmerged instead
    (anchors and scores [B, H_q, L_q, n_pieces * k], one piece's list after another, -1 = none): their top k
    by score, the earlier column first on equal scores (the stable sort's order), is the merged selection;
    a consumer that takes it inside its own kernel saves the merge's launches (the decode path does).
    `launch_dependents=True` (a GPU only) lets a kernel launched next with programmatic dependent launch start
    while this one runs; that kernel must wait (`gdc_wait`) before it reads what this one writes.
    `prefix`: `prefix.key_prefix(k, first_real)` or `KeySums.update` for the "span_mean" key (built here when not
    given); block size, warps and stages default to `SEARCH_TILES` of the config's search key.
    "span_mean" only: `rescore=False` ranks by the products' scores alone and `margin` replaces the error bound
    `RESCORE_MARGIN` (both for comparisons); `noise` (tests) adds to every product score a fixed pseudo-random
    error of up to `noise` times that bound, which the rescoring must undo. `hi_only=True` (timing only: the
    selection is not exact) scores from the `hi` parts of the sums alone and does not rescore: the block loop of
    the screening search that docs/semantics.md proposes, to be timed before it is built.
    """
    batch, heads_q, len_q, dim = q_search.shape
    heads_kv = k.shape[1]
    group = heads_q // heads_kv
    ksel = config.num_spans
    offsets = anchor_table(config, max(t_bound, 1), q_search.device)
    n_off = offsets.numel()
    n_splits = 1 if not split_candidates else max(1, cdiv(n_off, split_candidates))
    per_split = cdiv(max(n_off, 1), n_splits)
    anchors = torch.empty(batch, heads_q, len_q, n_splits * ksel, dtype=torch.int32, device=q_search.device)
    scores = torch.empty(batch, heads_q, len_q, n_splits * ksel, dtype=torch.float32, device=q_search.device)
    if len_q == 0:
        return (anchors[..., :ksel], scores[..., :ksel]) if merge else (anchors, scores)
    if n_off == 0:
        offsets = torch.ones(1, dtype=torch.int64, device=q_search.device)
    gp = max(16, next_pow2(group))
    span_mean = config.search_key == "span_mean"
    tile_n, warps, stages = SEARCH_TILES[config.search_key]
    if block_n is None:
        block_n = 16 if interpreting() or (span_mean and dim > 128) else tile_n
    wide = k.shape[2] * max(k.stride(2), 1) + dim * max(k.stride(3), 1) >= 2**31
    if span_mean:
        if prefix is None:
            prefix = key_prefix(k, first_real)
        tables = span_tables(config, max(t_bound, 1), q_search.device)
        pre, third, scale, center, norm = prefix.pairs, prefix.third, prefix.scale, prefix.center, prefix.norm
        back, fwd = tables.back, tables.fwd
        pre_rows = pre.shape[2]  # L_kv + 1, or more where the sums are kept between calls (`prefix.KeySums`)
        wide = wide or pre_rows * 2 * dim >= 2**31
        if margin is None:
            margin = RESCORE_MARGIN * max(1, dim // 128)
        if hi_only:
            rescore = False
    else:
        pre = third = scale = center = norm = back = fwd = offsets  # not read
        pre_rows = k.shape[2] + 1
        rescore, margin, noise, hi_only = False, 0.0, 0.0, False
    keep = ksel + 1 if rescore else ksel  # the (k+1)-th candidate tells whether the k-th is decided
    grid = (len_q, batch * heads_kv, n_splits)
    _search_kernel[grid](
        q_search, k, pre, third, scale, center, norm, back, fwd, offsets, positions, first_real, anchors, scores,
        *q_search.stride(), *k.stride(),
        n_off, config.sw_index + 1, config.search_power, heads_q, heads_kv, len_q, group, per_split, n_splits,
        window_length(config), back.numel() - 1, pre_rows, float(margin),
        D=dim, GP=gp, BN=block_n, KSEL=ksel, KEEP=keep, KP=next_pow2(keep),
        PREC=dot_precision(q_search.dtype), UPCAST=interpreting() or q_search.dtype == torch.float32,
        WIDE=wide, SPAN_MEAN=span_mean, RESCORE=rescore, RESCORE_ALL=n_splits > 1, DC=min(dim, 32),
        NOISE=float(noise), HI_ONLY=bool(hi_only), TRIGGER=bool(launch_dependents) and not interpreting(),
        REACH_BY_MASK=n_splits > 1,
        num_warps=warps if num_warps is None else num_warps, num_stages=stages if num_stages is None else num_stages,
    )
    if n_splits == 1 or not merge:
        return anchors, scores
    # Pieces hold decreasing anchors, each sorted by (score, anchor) descending: a stable sort keeps larger
    # anchors first on equal scores, as within one piece. ("span_mean": every piece rescored its kept candidates
    # exactly, so the pieces compare by exact scores.)
    ranked = scores.masked_fill(anchors < 0, float("-inf"))
    top = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :ksel]
    return anchors.gather(-1, top).contiguous(), scores.gather(-1, top).contiguous()
