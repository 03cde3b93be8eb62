"""The slices of a sorted entry list that may touch each key block, for the backward's key-major dk/dv passes.

`block_ranges` is `entries.key_block_ranges` (the torch rule, which the interpreter tests compare it with) in one
launch: each program binary-searches one group's sorted keys for one key block's bounds in every length bucket, and
raises each bucket's longest slice (the dk/dv kernels' rotation period) atomically. The torch rule took about 22
launches and a copy from the host per dk/dv call, and the period two more (benchmarks/NOTES.md item 43).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .common import cdiv, next_pow2
from .entries import EntryList

__all__ = ["block_ranges"]


@triton.jit
def _block_ranges_kernel(KEY, COUNT, MAX_LEN, RANGES, PERIOD, key_stride, n_keys, n_blocks, n_buckets, key_span,
                         iters, BLOCK_N: tl.constexpr, NB: tl.constexpr):
    blk = tl.program_id(0)
    grp = tl.program_id(1)
    bucket = tl.arange(0, NB)
    bmask = bucket < n_buckets
    max_len = tl.load(MAX_LEN + bucket, mask=bmask, other=1).to(tl.int64)
    k0 = blk.to(tl.int64) * BLOCK_N
    base = bucket.to(tl.int64) * key_span  # bucket << key_shift
    low = base + tl.maximum(k0 - max_len + 1, 0)  # first keys of entries that can reach the block
    high = base + tl.minimum(k0 + BLOCK_N - 1, key_span - 1)
    row = KEY + grp.to(tl.int64) * key_stride
    # [a_lo, a_hi): the first key >= low; [b_lo, b_hi): the first key > high
    a_lo = tl.zeros([NB], tl.int64)
    a_hi = tl.zeros([NB], tl.int64) + n_keys
    b_lo = tl.zeros([NB], tl.int64)
    b_hi = tl.zeros([NB], tl.int64) + n_keys
    for _ in range(iters):
        a_on = bmask & (a_lo < a_hi)
        a_mid = (a_lo + a_hi) // 2
        a_key = tl.load(row + a_mid, mask=a_on, other=0).to(tl.int64)
        b_on = bmask & (b_lo < b_hi)
        b_mid = (b_lo + b_hi) // 2
        b_key = tl.load(row + b_mid, mask=b_on, other=0).to(tl.int64)
        a_right = a_on & (a_key < low)
        a_hi = tl.where(a_on & ~a_right, a_mid, a_hi)
        a_lo = tl.where(a_right, a_mid + 1, a_lo)
        b_right = b_on & (b_key <= high)
        b_hi = tl.where(b_on & ~b_right, b_mid, b_hi)
        b_lo = tl.where(b_right, b_mid + 1, b_lo)
    count = tl.load(COUNT + grp).to(tl.int64)
    start = a_lo
    stop = tl.maximum(tl.minimum(b_lo, count), start)
    out = RANGES + ((grp.to(tl.int64) * n_blocks + blk) * n_buckets + bucket) * 2
    tl.store(out, start.to(tl.int32), mask=bmask)
    tl.store(out + 1, stop.to(tl.int32), mask=bmask)
    tl.atomic_max(PERIOD + bucket, (stop - start).to(tl.int32), mask=bmask, sem="relaxed")


@functools.lru_cache(maxsize=256)
def _bucket_max_len(maxima: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The buckets' length bounds on the device, copied from the host once per distinct list of them (and so not
    at all in a step after the first at the same length: a CUDA graph may capture it)."""
    return torch.tensor(maxima, dtype=torch.int64, device=device)


def block_ranges(entries: EntryList, len_kv: int, block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranges [groups, n_blocks, buckets, 2] int32 as `entries.key_block_ranges`, period [buckets] int32: per
    bucket the longest slice over every group and block)."""
    key = entries.key.contiguous()
    groups, n_keys = key.shape
    n_blocks, n_buckets = cdiv(len_kv, block_n), len(entries.bucket_max_len)
    device = key.device
    ranges = torch.empty(groups, n_blocks, n_buckets, 2, dtype=torch.int32, device=device)
    period = torch.zeros(n_buckets, dtype=torch.int32, device=device)
    if n_blocks == 0 or groups == 0:
        return ranges, period
    _block_ranges_kernel[(n_blocks, groups)](
        key, entries.count, _bucket_max_len(tuple(entries.bucket_max_len), device), ranges, period, key.stride(0),
        n_keys, n_blocks, n_buckets, 1 << entries.key_shift, max(n_keys, 1).bit_length() + 1,
        BLOCK_N=block_n, NB=max(next_pow2(n_buckets), 2), num_warps=1,
    )
    return ranges, period
