"""Span entry lists straight from the search's output: one pass instead of a dozen tensor operations.

For every selected span it computes the semantics' bounds, validity, gate (softmax of the router scores over a
row's k spans) and sort key, and writes key, last key and flat entry id already in the order of a
(batch, kv-head) group's list, so that one sort orders the list; a second launch takes the sort's order to the
first keys, last keys and ids and counts each group's real entries (on an H200 host five torch operations there
cost about 0.25 ms of host time per call, which a 16K forward waits for). `entries.span_entries` computes the same
lists with torch operations (the tests compare both).

The sort is of one flat list: the key sorted holds the group above the list's own key (`group_sort_layout`), so
every group's entries land in its own row of the result, in the list's order. (A sort of [groups, n] along its
rows sorts every element once and then again by row, and gathers: about twice the launches and 0.16 ms of an H200
host's time per 16K forward, which the forward waits for.) The finish writes the list's own key back.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..config import SuperlinearConfig
from ..geometry import span_tables, window_length
from .common import NEG_BIG, interpreting, span_range
from .entries import EntryList, id_dtype, length_buckets, sort_key_layout

__all__ = ["span_lists"]


@triton.jit
def _span_lists_kernel(
    ANCH, SCORE, POS, S0, BACK, FWD,
    KEY, HI, ENT, GATE, VALID, LSE_S,
    L_Q, H_Q, H_KV, width, t_bound, n_buckets, shift, invalid, group_shift,
    G: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr, BM: tl.constexpr, FILL_LSE: tl.constexpr,
):
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    b = grp // H_KV
    kv = grp % H_KV
    m = pid * BM + tl.arange(0, BM)  # (row, head in group) pairs, in the group list's order
    rmask = m < L_Q * G
    r = m // G
    h = kv * G + m % G
    j = tl.arange(0, KP)
    jmask = j < KSEL
    mask = rmask[:, None] & jmask[None, :]
    src = ((b * H_Q + h).to(tl.int64) * L_Q + r)[:, None] * KSEL + j[None, :]  # flat id in [B, H_q, L_q, k]
    a = tl.load(ANCH + src, mask=mask, other=-1).to(tl.int64)
    score = tl.load(SCORE + src, mask=mask, other=0.0)
    pos = tl.load(POS + r, mask=rmask, other=0).to(tl.int64)
    s0 = tl.load(S0 + b).to(tl.int64)
    t = tl.minimum(tl.maximum(pos + 1 - s0, 0), t_bound)
    back = tl.load(BACK + t, mask=rmask, other=0)
    fwd = tl.load(FWD + t, mask=rmask, other=0)
    valid = a >= 0
    lo, hi = span_range(a, back[:, None], fwd[:, None], s0, pos[:, None], width)
    bucket = tl.minimum(tl.maximum(t - 1, 0) * n_buckets // t_bound, n_buckets - 1)
    # the flat sort's key (`group_sort_layout`): the group, then the list's own key
    key = (grp.to(tl.int64) << group_shift) | tl.where(valid, (bucket[:, None] << shift) | lo, invalid)
    # the gate: softmax over the row's k scores, unused spans at NEG_BIG, then zeroed
    z = tl.where(valid, score, NEG_BIG)
    z = tl.where(jmask[None, :], z, float("-inf"))
    e = tl.exp(z - tl.max(z, axis=1)[:, None])
    gate = tl.where(valid, e / tl.sum(e, axis=1)[:, None], 0.0)
    dst = (grp.to(tl.int64) * L_Q * G + m)[:, None] * KSEL + j[None, :]  # int64: no overflow past 2**31 ids
    tl.store(KEY + dst, key.to(KEY.dtype.element_ty), mask=mask)
    tl.store(HI + dst, hi.to(tl.int32), mask=mask)
    tl.store(ENT + dst, src.to(ENT.dtype.element_ty), mask=mask)
    tl.store(GATE + src, gate, mask=mask)
    tl.store(VALID + src, valid.to(tl.int8), mask=mask)
    if FILL_LSE:  # the span pass writes the used spans' log-sum-exps
        tl.store(LSE_S + src, tl.full(src.shape, NEG_BIG, tl.float32), mask=mask)


@triton.jit
def _finish_lists_kernel(SORTED, ORDER, HI_IN, ENT_IN, KEY, LO, HI, ENT, COUNT, n, low_mask, own_mask, invalid,
                         BLOCK: tl.constexpr):
    """The flat sort's keys -> each group's list keys and first keys; the sort's order (flat) -> last keys and ids;
    the group's count of real entries, written by the one program holding the last real key (or, with none, the
    first key): invalid keys sort last within their group."""
    grp = tl.program_id(1)
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    row = grp.to(tl.int64) * n
    key = tl.load(SORTED + row + i, mask=mask, other=invalid) & own_mask
    src = tl.load(ORDER + row + i, mask=mask, other=0)
    tl.store(KEY + row + i, key.to(KEY.dtype.element_ty), mask=mask)
    tl.store(LO + row + i, (key & low_mask).to(tl.int32), mask=mask)
    tl.store(HI + row + i, tl.load(HI_IN + src, mask=mask, other=0), mask=mask)
    tl.store(ENT + row + i, tl.load(ENT_IN + src, mask=mask, other=0), mask=mask)
    real = key != invalid
    next_key = tl.load(SORTED + row + i + 1, mask=i + 1 < n, other=invalid) & own_mask
    next_real = next_key != invalid
    tl.store(COUNT + grp + 0 * i, (i + 1).to(tl.int32), mask=mask & real & ~next_real)
    tl.store(COUNT + grp + 0 * i, 0 * i, mask=(i == 0) & ~real)


def group_sort_layout(invalid: int, groups: int) -> tuple[int, torch.dtype]:
    """(shift, dtype) of the flat sort's key ``group << shift | key``, for list keys up to `invalid` (the key of
    an unused span, the largest): int32 where it fits, as the sort is then half the passes."""
    shift = max(invalid.bit_length(), 1)
    return shift, torch.int32 if shift + (groups - 1).bit_length() <= 31 else torch.int64


def span_lists(
    config: SuperlinearConfig,
    t_bound: int,
    anchors: torch.Tensor,
    scores: torch.Tensor,
    positions: torch.Tensor,
    first_real: torch.Tensor,
    heads_kv: int,
    len_kv: int,
    lse_s: torch.Tensor | None = None,
) -> tuple[EntryList, torch.Tensor, torch.Tensor]:
    """(span entry list, gate float32 [B, H_q, L_q, k], valid bool [B, H_q, L_q, k]) from the search's output, for
    rows with at most `t_bound` tokens seen. `lse_s` (float32, the anchors' shape): filled with NEG_BIG on the way,
    for the span pass to write the used spans' log-sum-exps into (a fill of its own costs host time)."""
    batch, heads_q, len_q, ksel = anchors.shape
    group = heads_q // heads_kv
    device = anchors.device
    t_bound = max(t_bound, 1)
    n_buckets, bucket_max = length_buckets(config, t_bound)
    shift, dtype, invalid = sort_key_layout(n_buckets, len_kv)
    tables = span_tables(config, t_bound, device)
    groups, n = batch * heads_kv, len_q * group * ksel
    group_shift, flat_dtype = group_sort_layout(invalid, groups)
    flat_key = torch.empty(groups * n, dtype=flat_dtype, device=device)
    hi = torch.empty(groups, n, dtype=torch.int32, device=device)
    ent = torch.empty(groups, n, dtype=id_dtype(anchors.numel()), device=device)
    gate = torch.empty(anchors.shape, dtype=torch.float32, device=device)
    valid = torch.empty(anchors.shape, dtype=torch.uint8, device=device)
    block_m = 16 if interpreting() else 128
    if n:
        grid = (triton.cdiv(len_q * group, block_m), groups)
        _span_lists_kernel[grid](
            anchors, scores.contiguous(), positions, first_real, tables.back, tables.fwd,
            flat_key, hi, ent, gate, valid, gate if lse_s is None else lse_s,
            len_q, heads_q, heads_kv, window_length(config), t_bound, n_buckets, shift, invalid, group_shift,
            G=group, KSEL=ksel, KP=triton.next_power_of_2(ksel), BM=block_m, FILL_LSE=lse_s is not None,
            num_warps=1 if interpreting() else 4,
        )
    flat_key, order = torch.sort(flat_key)
    key = torch.empty(groups, n, dtype=dtype, device=device)
    lo = torch.empty(groups, n, dtype=torch.int32, device=device)  # (padding past `count` is never read)
    sorted_hi, sorted_ent = torch.empty_like(hi), torch.empty_like(ent)
    count = torch.empty(groups, dtype=torch.int32, device=device)
    if n:
        block = 16 if interpreting() else 1024
        _finish_lists_kernel[(triton.cdiv(n, block), groups)](
            flat_key, order, hi, ent, key, lo, sorted_hi, sorted_ent, count, n, (1 << shift) - 1,
            (1 << group_shift) - 1, invalid, BLOCK=block, num_warps=1 if interpreting() else 4,
        )
    else:
        count.zero_()
    spans = EntryList(sorted_ent, lo, sorted_hi, count, ksel, key, bucket_max, shift)
    return spans, gate, valid.view(torch.bool)
