"""Window entry lists in one launch: the window of every query row, for every (batch, kv-head) group.

`entries.window_entries` builds the same lists with torch operations (about thirty of them, a sort included: host
work that a short prefill waits for); the tests compare both. A row's window is ``[max(pos - W + 1, s0), pos]``,
so its first key grows with the row's position: rows in position order are already sorted by first key, which is
all a tile needs (the GQA heads of a row stay next to each other). The forward takes the rows in their given order,
which is correct whatever the positions (a tile walks the union of its entries' ranges) and sorted when they ascend,
as every prefill's do. The backward's key-major passes search the list by first key (`key_block_ranges`), so for
them the rows are put in position order first (`sort=True`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..config import SuperlinearConfig
from ..geometry import window_length
from .common import cdiv, interpreting
from .entries import EntryList, id_dtype

__all__ = ["window_lists"]


@triton.jit
def _window_lists_kernel(
    POS, S0, ORDER, ENT, LO, HI, COUNT,
    L_Q, H_Q, H_KV, width,
    G: tl.constexpr, BM: tl.constexpr, ORDERED: tl.constexpr,
):
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    b = grp // H_KV
    kv = grp % H_KV
    m = pid * BM + tl.arange(0, BM)  # (row in list order, head in group) pairs
    mask = m < L_Q * G
    i = m // G
    if ORDERED:
        r = tl.load(ORDER + i, mask=mask, other=0)
    else:
        r = i.to(tl.int64)
    h = kv * G + m % G
    pos = tl.load(POS + r, mask=mask, other=0).to(tl.int64)
    s0 = tl.load(S0 + b).to(tl.int64)
    lo = tl.maximum(pos - width + 1, s0)
    dst = grp.to(tl.int64) * L_Q * G + m
    tl.store(ENT + dst, ((b * H_Q + h).to(tl.int64) * L_Q + r).to(ENT.dtype.element_ty), mask=mask)
    tl.store(LO + dst, lo.to(tl.int32), mask=mask)
    tl.store(HI + dst, pos.to(tl.int32), mask=mask)
    tl.store(COUNT + grp + 0 * m, (L_Q * G + 0 * m).to(tl.int32), mask=m == 0)  # one entry a row


def window_lists(
    config: SuperlinearConfig,
    positions: torch.Tensor,
    first_real: torch.Tensor,
    heads_kv: int,
    group: int,
    sort: bool = False,
) -> EntryList:
    """The window entry list of every (batch, kv-head) group ([B * H_kv, L_q * G]), rows in their given order, or
    with `sort` in position order (a stable sort of `positions`), as the backward needs. Its sort key is the first
    key itself (int32)."""
    batch, len_q = first_real.shape[0], positions.shape[0]
    heads_q = heads_kv * group
    device = positions.device
    groups, n = batch * heads_kv, len_q * group
    ent = torch.empty(groups, n, dtype=id_dtype(batch * heads_q * len_q), device=device)
    lo = torch.empty(groups, n, dtype=torch.int32, device=device)
    hi = torch.empty(groups, n, dtype=torch.int32, device=device)
    order = torch.sort(positions, stable=True).indices if sort else positions  # (not read when not sorted)
    count = torch.empty(groups, dtype=torch.int32, device=device)
    block_m = 16 if interpreting() else 1024
    if n:
        _window_lists_kernel[(cdiv(n, block_m), groups)](
            positions, first_real, order, ent, lo, hi, count,
            len_q, heads_q, heads_kv, window_length(config),
            G=group, BM=block_m, ORDERED=sort, num_warps=1 if interpreting() else 4,
        )
    else:
        count.zero_()
    return EntryList(ent, lo, hi, count, 1, lo, [max(window_length(config), 1)])
