"""Router search: scores ``q_search . k[a_i]`` at every candidate anchor and the top-k, in one kernel.

One program handles one query row and one key/value head. The group's query heads share the anchor
keys, so the scores of all of them are one ``[heads x D] @ [D x anchors]`` product per block of anchors
(heads are padded to 16 rows for the tensor cores). The top-k is merged block by block into a running
list, so the full score row is never written to memory. Candidates are ``pos + 1 - o(i)`` with o(i) from
`slkernels.geometry.anchor_table` (exact integers from the host), valid while ``o(i) <= t``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..config import SuperlinearConfig
from ..geometry import anchor_table
from .common import dot_precision, interpreting

__all__ = ["search_topk"]


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
def _search_kernel(
    QS, K, OFFS, POS, S0, ANCH, SCORE,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    n_offsets, first_index, power, H_Q, H_KV, L_Q, G, per_split, n_splits,
    D: tl.constexpr, GP: tl.constexpr, BN: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, WIDE: tl.constexpr,
):
    row = tl.program_id(0)
    grp = tl.program_id(1)
    split = tl.program_id(2)
    b = grp // H_KV
    kv = grp % H_KV
    pos = tl.load(POS + row).to(tl.int32)
    t = pos + 1 - tl.load(S0 + b).to(tl.int32)

    heads = tl.arange(0, GP)
    hmask = heads < G
    h = kv * G + heads
    offs_d = tl.arange(0, D)
    qs_ptr = QS + b.to(tl.int64) * sqb + h.to(tl.int64)[:, None] * sqh + row.to(tl.int64) * sql + offs_d[None, :] * sqd
    qs = tl.load(qs_ptr, mask=hmask[:, None], other=0.0)
    if UPCAST:
        qs = qs.to(tl.float32)
    k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh

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
    num_warps: int = 1,
    num_stages: int = 2,
    split_candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected anchors (int32 [B, H_q, L_q, k], -1 = none) and their float32 scores (0 where none).

    `t_bound` is a host-side upper bound of t (L_kv works); no value is read back from the device, so the
    call can be captured in a CUDA graph once the anchor table has been cached on the device.
    `split_candidates`: with few query rows (decode) one program per row would walk thousands of
    anchors alone; the candidates are then cut into pieces of this many, searched in parallel, and the
    pieces' top-k lists merged with one stable sort.
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
    if block_n is None:
        # measured on an H200: 32 (or 64) anchors x 1 warp, two stages (the next block's keys are copied to
        # shared memory while this one is merged) is fastest
        block_n = 16 if interpreting() else 32
    grid = (len_q, batch * heads_kv, n_splits)
    _search_kernel[grid](
        q_search, k, offsets, positions, first_real, anchors, scores,
        *q_search.stride(), *k.stride(),
        n_off, config.sw_index + 1, config.search_power, heads_q, heads_kv, len_q, group, per_split, n_splits,
        D=dim, GP=gp, BN=block_n, KSEL=ksel, KP=triton.next_power_of_2(ksel),
        PREC=dot_precision(q_search.dtype), UPCAST=interpreting() or q_search.dtype == torch.float32,
        WIDE=k.shape[2] * max(k.stride(2), 1) + dim * max(k.stride(3), 1) >= 2**31,
        num_warps=num_warps, num_stages=num_stages,
    )
    if n_splits == 1:
        return anchors, scores
    # Pieces hold decreasing anchors, each sorted by (score, anchor) descending: a stable sort keeps larger
    # anchors first on equal scores, as within one piece.
    ranked = scores.masked_fill(anchors < 0, float("-inf"))
    top = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :ksel]
    return anchors.gather(-1, top).contiguous(), scores.gather(-1, top).contiguous()
