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
def _search_kernel(
    QS, K, OFFS, POS, S0, ANCH, SCORE,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    n_offsets, H_Q, H_KV, L_Q, G, per_split, n_splits,
    D: tl.constexpr, GP: tl.constexpr, BN: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    row = tl.program_id(0)
    grp = tl.program_id(1)
    split = tl.program_id(2)
    b = grp // H_KV
    kv = grp % H_KV
    pos = tl.load(POS + row).to(tl.int64)
    s0 = tl.load(S0 + b).to(tl.int64)
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

    cols = tl.arange(0, KP)
    best_v = tl.full([GP, KP], float("-inf"), tl.float32)
    best_i = tl.full([GP, KP], -1, tl.int64)
    # Only offsets <= t exist for this row; the table is sorted, so stop at the first block past t.
    n_here = tl.minimum(n_offsets, tl.maximum(t, 0))
    first = split * per_split
    last = tl.minimum(n_here, first + per_split)
    for n0 in range(first, last, BN):
        cand = n0 + tl.arange(0, BN)
        off = tl.load(OFFS + cand, mask=cand < last, other=0).to(tl.int64)
        valid = (cand < last) & (off <= t) & (off > 0)
        anchor = pos + 1 - off
        kt = tl.load(k_base + anchor[None, :] * skl + offs_d[:, None] * skd, mask=valid[None, :], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        s = tl.dot(qs, kt, input_precision=PREC)
        s = tl.where(valid[None, :], s, float("-inf"))
        anchor2 = tl.broadcast_to(anchor[None, :], [GP, BN])
        new_v = tl.full([GP, KP], float("-inf"), tl.float32)
        new_i = tl.full([GP, KP], -1, tl.int64)
        for j in tl.static_range(KSEL):
            m1 = tl.max(s, axis=1)
            m2 = tl.max(best_v, axis=1)
            take_new = m1 > m2
            m = tl.where(take_new, m1, m2)
            # position of the maximum in the block (largest anchor on ties) and in the running list
            i1 = tl.max(tl.where(s == m1[:, None], anchor2, -1), axis=1)
            c2 = tl.min(tl.where(best_v == m2[:, None], cols[None, :], KP), axis=1)
            i2 = tl.sum(tl.where(cols[None, :] == c2[:, None], best_i, 0), axis=1)
            pick = tl.where(take_new, i1, i2)
            pick = tl.where(m == float("-inf"), -1, pick)
            new_v = tl.where(cols[None, :] == j, m[:, None], new_v)
            new_i = tl.where(cols[None, :] == j, pick[:, None], new_i)
            s = tl.where(take_new[:, None] & (anchor2 == i1[:, None]), float("-inf"), s)
            best_v = tl.where((~take_new)[:, None] & (cols[None, :] == c2[:, None]), float("-inf"), best_v)
        best_v = new_v
        best_i = new_i

    out_row = (((b * H_Q + h).to(tl.int64) * L_Q + row) * n_splits + split) * KSEL
    out_ptr = out_row[:, None] + cols[None, :]
    omask = hmask[:, None] & (cols[None, :] < KSEL)
    tl.store(ANCH + out_ptr, best_i.to(tl.int32), mask=omask)
    tl.store(SCORE + out_ptr, tl.where(best_i >= 0, best_v, 0.0), mask=omask)


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
    split_candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected anchors (int32 [B, H_q, L_q, k], -1 = none) and their float32 scores (0 where none).

    `t_bound` is a host-side upper bound of t (L_kv works); no value is read back from the device, so the
    call can be captured in a CUDA graph once the anchor table has been cached on the device.
    `split_candidates`: with few query rows (decode) one program per row would walk thousands of
    anchors alone; the candidates are then cut into pieces of this many, searched in parallel, and the
    pieces' top-k lists merged with one `torch.topk`.
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
        block_n = 16 if interpreting() else 32  # measured on an H200 at 256K: 32 keys x 1 warp is fastest
    if num_warps is None:
        num_warps = 1
    grid = (len_q, batch * heads_kv, n_splits)
    _search_kernel[grid](
        q_search, k, offsets, positions, first_real, anchors, scores,
        *q_search.stride(), *k.stride(),
        n_off, heads_q, heads_kv, len_q, group, per_split, n_splits,
        D=dim, GP=gp, BN=block_n, KSEL=ksel, KP=triton.next_power_of_2(ksel),
        PREC=dot_precision(q_search.dtype), UPCAST=interpreting() or q_search.dtype == torch.float32,
        num_warps=num_warps,
    )
    if n_splits == 1:
        return anchors, scores
    ranked = scores.masked_fill(anchors < 0, float("-inf"))
    top = ranked.topk(ksel, dim=-1).indices
    return anchors.gather(-1, top).contiguous(), scores.gather(-1, top).contiguous()
