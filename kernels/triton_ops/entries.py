"""Entries: the unit of work of the attention kernels.

An entry is one (query row, query head, key range): the window of a row, or one of its selected spans.
Entries of one (batch, key/value head) group are sorted by the first key of their range, so a tile of
consecutive entries reads nearly the same keys and its scores are one tensor-core product; the window
entries of one row for the group's heads come out next to each other (the GQA heads packed into the M
dimension). Everything here is integer torch on the device, with no read-back to the host.

Entry ids are flat indices into [B, H_q, L_q, NJ] (NJ = 1 for windows, k for spans):
``ent = ((b * H_q + h) * L_q + row) * NJ + j``, so the kernels reach an entry's buffers and its row
with one division by the compile-time NJ. int32 while they fit, int64 beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..config import SuperlinearConfig
from ..geometry import geometry_tables, span_bounds, span_tables, window_length

__all__ = ["EntryList", "Geometry", "build_geometry", "max_span_length", "window_entries", "span_entries", "key_block_ranges",
           "id_dtype", "length_buckets", "sort_key_layout"]

# Buckets of rows (by tokens seen) for span entries; 16 keeps span lengths in a tile within ~5% at 256K.
SPAN_BUCKETS = 16
# The sort key holds the bucket over as many bits of first key as the key axis needs; with at most this many
# bits of first key (2**27 keys) it is an int32: half the radix passes of an int64 key (the sort of 25M span
# entries at 256K). Fewer bits leave room above it for the (batch, kv-head) group in the forward's one flat sort
# (`span_lists`), which stays an int32 up to 2**26 keys at 2 groups.
SHORT_KEY_SHIFT = 27


@dataclass
class EntryList:
    """Sorted entries of every (batch, kv-head) group: [groups, N] ids, int32 first and last keys."""

    eid: torch.Tensor  # flat entry ids (module docstring)
    lo: torch.Tensor
    hi: torch.Tensor
    count: torch.Tensor  # int32 [groups]: real entries per group (the rest are padding at the end)
    nj: int  # 1 for windows, k for spans
    key: torch.Tensor  # [groups, N]: the sort key, ``bucket << key_shift | lo`` (int32 when it fits)
    bucket_max_len: list[int]  # per bucket, an upper bound of hi - lo + 1
    key_shift: int = 32


@dataclass
class Geometry:
    """Per-row and per-span key ranges derived from the selection (all on the device)."""

    win_lo: torch.Tensor  # int64 [B, L_q]
    win_hi: torch.Tensor  # int64 [B, L_q]
    span_lo: torch.Tensor  # int64 [B, H_q, L_q, k]
    span_hi: torch.Tensor  # int64 [B, H_q, L_q, k]
    valid: torch.Tensor  # bool [B, H_q, L_q, k]
    t: torch.Tensor  # int64 [B, L_q]: tokens seen by each row
    t_bound: int
    config: SuperlinearConfig  # the window and span tables come from it


def build_geometry(
    config: SuperlinearConfig,
    anchors: torch.Tensor,
    positions: torch.Tensor,
    first_real: torch.Tensor,
    t_bound: int,
) -> Geometry:
    """The window and span bounds of docs/semantics.md from the selected anchors, with the host-computed span tables
    (the torch path that `span_lists` and `window_lists` are checked against)."""
    width = window_length(config)
    tables = span_tables(config, max(t_bound, 1), positions.device)
    pos = positions.to(torch.int64)[None, :]  # [1, L]
    s0 = first_real.to(torch.int64)[:, None]  # [B, 1]
    t = (pos + 1 - s0).clamp(0, max(t_bound, 1))
    win_lo = torch.maximum(pos - width + 1, s0)
    win_hi = pos.expand_as(win_lo)
    a = anchors.to(torch.int64)
    valid = a >= 0
    span_lo, span_hi = span_bounds(config, a, t[:, None, :, None], s0[:, None, :, None], pos[:, None, :, None], tables)
    return Geometry(win_lo, win_hi, span_lo, span_hi, valid, pos + 1 - s0, max(t_bound, 1), config)


def max_span_length(config: SuperlinearConfig, t_bound: int) -> int:
    """Longest span any row with t <= t_bound can have (from the host tables: no device read-back)."""
    t_top = max(t_bound, 1)
    return geometry_tables(config, t_top, "cpu").span_length(t_top)


def window_entries(geo: Geometry, heads_kv: int, group: int) -> EntryList:
    batch, len_q = geo.win_lo.shape
    order = torch.sort(geo.win_lo, dim=-1, stable=True).indices  # [B, L]
    lo = geo.win_lo.gather(1, order)
    hi = geo.win_hi.gather(1, order)
    heads_q = heads_kv * group
    device = order.device
    b = torch.arange(batch, device=device)[:, None, None, None]
    h = torch.arange(heads_q, device=device).view(1, heads_kv, 1, group)
    ent = ((b * heads_q + h) * len_q + order[:, None, :, None]).reshape(batch * heads_kv, len_q * group)
    lo = lo[:, :, None].expand(batch, len_q, group).reshape(batch, 1, len_q * group)
    hi = hi[:, :, None].expand(batch, len_q, group).reshape(batch, 1, len_q * group)

    def per_group(x: torch.Tensor) -> torch.Tensor:
        return x.expand(batch, heads_kv, len_q * group).reshape(batch * heads_kv, len_q * group).to(torch.int32).contiguous()

    count = torch.full((batch * heads_kv,), len_q * group, dtype=torch.int32, device=device)
    lo = per_group(lo)
    ent = ent.to(id_dtype(ent.numel())).contiguous()
    return EntryList(ent, lo, per_group(hi), count, 1, lo.to(torch.int64), [max(window_length(geo.config), 1)])


def id_dtype(n_ids: int) -> torch.dtype:
    return torch.int32 if n_ids < 2**31 else torch.int64


def sort_key_layout(n_buckets: int, len_kv: int) -> tuple[int, torch.dtype, int]:
    """(shift, dtype, key of an unused span) of the span sort key ``bucket << shift | first key``, with the
    fewest bits of first key that hold every key (``len_kv < 2**shift``); unused spans sort last, above every
    valid key (the largest valid one is below ``(n_buckets << shift) - 1``)."""
    shift = max(len_kv.bit_length(), 1)
    invalid = (n_buckets << shift) - 1
    short = shift <= SHORT_KEY_SHIFT and invalid.bit_length() <= 31
    return shift, torch.int32 if short else torch.int64, invalid


def span_entries(geo: Geometry, heads_kv: int, group: int, len_kv: int) -> EntryList:
    batch, heads_q, len_q, ksel = geo.span_lo.shape

    def grouped(x: torch.Tensor) -> torch.Tensor:
        # [B, H_q, L, k] -> [B*H_kv, L*G*k] ordered (row, head, j) to match eid
        x = x.reshape(batch, heads_kv, group, len_q, ksel).permute(0, 1, 3, 2, 4)
        return x.reshape(batch * heads_kv, len_q * group * ksel)

    n_buckets, bucket_max = length_buckets(geo.config, geo.t_bound)
    shift, dtype, invalid = sort_key_layout(n_buckets, len_kv)
    bucket = ((geo.t - 1).clamp_min(0) * n_buckets // geo.t_bound).clamp_max(n_buckets - 1)  # [B, L]
    key = torch.where(geo.valid, (bucket[:, None, :, None] << shift) | geo.span_lo, invalid).to(dtype)
    key, order = torch.sort(grouped(key), dim=-1)
    lo = (key & ((1 << shift) - 1)).to(torch.int32)  # (padding past `count` is never read)
    hi = grouped(geo.span_hi).gather(1, order)
    count = grouped(geo.valid).sum(dim=-1, dtype=torch.int32)
    n_ids = geo.span_lo.numel()
    ent = grouped(torch.arange(n_ids, dtype=id_dtype(n_ids), device=order.device).view_as(geo.span_lo))
    return EntryList(ent.gather(1, order), lo, hi.to(torch.int32), count, ksel, key, bucket_max, shift)


def length_buckets(config: SuperlinearConfig, t_bound: int) -> tuple[int, list[int]]:
    """Rows are split into buckets of t (span length grows with t), so a tile holds spans of nearly equal
    length and the key-major backward scans only entries that can reach its keys: (buckets, per bucket an upper
    bound of a span's length). From the host tables, computed once per (config, t_bound)."""
    n_buckets, maxima = _length_buckets(config, max(t_bound, 1))
    return n_buckets, list(maxima)


@lru_cache(maxsize=256)
def _length_buckets(config: SuperlinearConfig, t_bound: int) -> tuple[int, tuple[int, ...]]:
    host = geometry_tables(config, t_bound, "cpu")
    span_max = host.span_length(t_bound)
    n_buckets = max(1, min(SPAN_BUCKETS, t_bound))
    maxima = []
    for b in range(n_buckets):
        t_hi = min(t_bound, (b + 1) * t_bound // n_buckets + 1)
        maxima.append(min(span_max, host.span_length(t_hi)))
    return n_buckets, tuple(maxima)


def key_block_ranges(entries: EntryList, len_kv: int, block_n: int) -> torch.Tensor:
    """[groups, n_blocks, buckets, 2] int32: per bucket, the slice of sorted entries that may touch a key block.

    Within a bucket entries are sorted by first key and no range is longer than the bucket's maximum, so
    the entries touching keys [k0, k0 + block_n) have first key in [k0 - max_len + 1, k0 + block_n - 1].
    """
    n_blocks = (len_kv + block_n - 1) // block_n
    device = entries.lo.device
    k0 = torch.arange(n_blocks, device=device, dtype=torch.int64) * block_n
    groups = entries.lo.shape[0]
    n_buckets = len(entries.bucket_max_len)
    bucket = torch.arange(n_buckets, device=device, dtype=torch.int64)[None, :] << entries.key_shift
    max_len = torch.tensor(entries.bucket_max_len, device=device, dtype=torch.int64)[None, :]
    low = bucket + (k0[:, None] - max_len + 1).clamp_min(0)  # [n_blocks, buckets]
    high = bucket + (k0[:, None] + block_n - 1).clamp_max((1 << entries.key_shift) - 1)
    low = low.reshape(1, -1).expand(groups, -1).to(entries.key.dtype).contiguous()
    high = high.reshape(1, -1).expand(groups, -1).to(entries.key.dtype).contiguous()
    start = torch.searchsorted(entries.key, low, side="left")
    stop = torch.searchsorted(entries.key, high, side="right")
    stop = torch.minimum(stop, entries.count[:, None].to(stop.dtype))
    ranges = torch.stack([start, torch.maximum(stop, start)], dim=-1)
    return ranges.reshape(groups, n_blocks, n_buckets, 2).to(torch.int32).contiguous()
