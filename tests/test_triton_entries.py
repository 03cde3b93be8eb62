"""Entry lists of the Triton kernels (plain torch, so they run on the CPU without the interpreter).

Span entries are sorted by ``bucket << shift | first key``: an int32 key (shift 27) while the cache is
shorter than 2**27 keys, int64 (shift 32) beyond. Both must give the same lists, and the per-key-block
slices that the dk/dv pass scans must hold every entry whose range touches the block.
"""

from __future__ import annotations

import pytest
import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import entries as entries_mod
from slkernels.triton_ops.entries import build_geometry, key_block_ranges, span_entries

SMALL = dict(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0)


def random_selection(gen: torch.Generator, batch: int, heads_q: int, length: int, pad: int, num_spans: int):
    """(anchors int32 [B, H_q, L, k], positions, first real token per row of the batch) of a made-up selection:
    anchors anywhere at or before their row (the geometry does not need the search grid), a fifth unused."""
    pos = torch.arange(length)
    first_real = torch.tensor([pad, 0][:batch])
    anchors = torch.randint(0, length, (batch, heads_q, length, num_spans), generator=gen)
    anchors = torch.minimum(anchors, pos[None, None, :, None])
    anchors[torch.rand(anchors.shape, generator=gen) < 0.2] = -1
    return anchors.to(torch.int32), pos, first_real


def _geometry(seed: int, batch: int, heads_q: int, length: int, pad: int):
    cfg = SuperlinearConfig.from_dict(SMALL)
    gen = torch.Generator().manual_seed(seed)
    anchors, pos, first_real = random_selection(gen, batch, heads_q, length, pad, cfg.num_spans)
    return build_geometry(cfg, anchors, pos, first_real, length)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_span_entries_int32_and_int64_keys_agree(seed, monkeypatch):
    geo = _geometry(seed, batch=2, heads_q=8, length=97, pad=5)
    short = span_entries(geo, 2, 4, 97)
    monkeypatch.setattr(entries_mod, "SHORT_KEY_SHIFT", 6)  # 97 keys no longer fit: the int64 path
    wide = span_entries(geo, 2, 4, 97)
    assert short.key.dtype == torch.int32 and wide.key.dtype == torch.int64
    expected = _brute_force_entries(geo, heads_kv=2, group=4)
    for lists in (short, wide):
        assert lists.count.tolist() == [len(e) for e in expected]
        for g, n in enumerate(lists.count.tolist()):
            assert torch.all(lists.key[g, 1:n] >= lists.key[g, : n - 1])  # sorted
            # equal keys may sort in either order: compare (first key, entry, last key) as sets
            got = sorted(zip(lists.lo[g, :n].tolist(), lists.eid[g, :n].tolist(), lists.hi[g, :n].tolist()))
            assert got == expected[g]


def _brute_force_entries(geo, heads_kv: int, group: int) -> list[list[tuple[int, int, int]]]:
    """Per (batch, kv head): the sorted (first key, entry id, last key) of every valid span, by loops."""
    batch, _, length, ksel = geo.span_lo.shape
    out = []
    for b in range(batch):
        for kv in range(heads_kv):
            rows = []
            for r in range(length):
                for gi in range(group):
                    for j in range(ksel):
                        h = kv * group + gi
                        if geo.valid[b, h, r, j]:
                            ent = ((b * heads_kv * group + h) * length + r) * ksel + j
                            rows.append((int(geo.span_lo[b, h, r, j]), ent,
                                         int(geo.span_hi[b, h, r, j])))
            out.append(sorted(rows))
    return out


@pytest.mark.parametrize("shift", [27, 6])
def test_key_block_slices_hold_every_entry_that_touches_the_block(shift, monkeypatch):
    monkeypatch.setattr(entries_mod, "SHORT_KEY_SHIFT", shift)
    geo = _geometry(3, batch=2, heads_q=4, length=150, pad=7)
    ent = span_entries(geo, 2, 2, 150)
    block = 16
    ranges = key_block_ranges(ent, 150, block)
    for g, n in enumerate(ent.count.tolist()):
        lo, hi = ent.lo[g, :n], ent.hi[g, :n]
        # every entry's bucket and position from its own key, to check the slice per bucket
        bucket = (ent.key[g, :n] >> ent.key_shift).tolist()
        for blk in range(ranges.shape[1]):
            k0 = blk * block
            touching = ((lo <= k0 + block - 1) & (hi >= k0) & (lo <= hi)).nonzero().flatten().tolist()
            for i in touching:
                start, stop = ranges[g, blk, bucket[i]].tolist()
                assert start <= i < stop, (g, blk, i)


@pytest.mark.parametrize("block", [16, 512])
def test_key_block_slices_hold_only_their_buckets_entries(block):
    """A bucket's slice of a key block holds entries of that bucket alone, also where the block reaches past the
    largest first key the sort key can hold (512 keys over 150: the first key takes 8 bits), so that no entry is
    scanned under two buckets."""
    geo = _geometry(4, batch=2, heads_q=4, length=150, pad=7)
    ent = span_entries(geo, 2, 2, 150)
    ranges = key_block_ranges(ent, 150, block)
    for g in range(ranges.shape[0]):
        bucket = (ent.key[g] >> ent.key_shift).tolist()
        for blk in range(ranges.shape[1]):
            for b, (start, stop) in enumerate(ranges[g, blk].tolist()):
                assert all(bucket[i] == b for i in range(start, stop)), (g, blk, b)


@pytest.mark.parametrize("len_kv", [1, 2, 3, 63, 64, 65, 127, 128, 2**27 - 1, 2**27])
def test_unused_spans_sort_key_is_above_every_valid_key(len_kv):
    """The key of an unused span is larger than the largest valid key (last bucket, first key len_kv - 1), also
    where that first key fills every bit of its field, so that unused spans sort after every used one."""
    shift, dtype, invalid = entries_mod.sort_key_layout(16, len_kv)
    assert len_kv - 1 < 1 << shift
    assert invalid > (15 << shift | (len_kv - 1))
    assert invalid <= torch.iinfo(dtype).max


def test_geometry_span_bounds_follow_the_semantics():
    """The entry lists take each span's keys from `slkernels.geometry.span_bounds` (the kernels' `span_range` is its
    copy, checked under the interpreter); here against the rule of docs/semantics.md written out span by span."""
    import math

    from slkernels.naive import window

    cfg = SuperlinearConfig.from_dict(SMALL)
    gen = torch.Generator().manual_seed(5)
    anchors, pos, first_real = random_selection(gen, 2, 2, 61, 7, cfg.num_spans)
    geo = build_geometry(cfg, anchors, pos, first_real, 61)
    width = window(cfg)
    for b in range(2):
        s0 = int(first_real[b])
        for r in range(61):
            t = r + 1 - s0
            for h in range(2):
                for j in range(cfg.num_spans):
                    a = int(anchors[b, h, r, j])
                    if a < 0 or t < 1:
                        continue
                    grow = math.pow(t, cfg.span_power)
                    lo = max(a - math.ceil(cfg.backward_factor * grow), s0)
                    hi = min(a + math.ceil(cfg.forward_factor * grow), r - width)
                    assert (int(geo.span_lo[b, h, r, j]), int(geo.span_hi[b, h, r, j])) == (lo, hi), (b, h, r, j)


@pytest.mark.parametrize("length, batch, held, chunks", [
    (1, 1, 0.0, 1), (16384, 1, 0.0, 1), (32768, 1, 0.0, 1), (65535, 1, 0.0, 1), (65536, 1, 0.0, 4),
    (262144, 1, 0.0, 10), (1 << 20, 1, 0.0, 9), (16384, 2, 0.0, 1), (32768, 8, 0.0, 8),
    (262144, 1, 0.1885, 16), (1 << 20, 1, 0.1885, 18)])
def test_inference_chunks_bound_what_a_prefill_holds(length, batch, held, chunks):
    """A prefill without gradients runs in chunks of aligned rows whose per-row extras (k + 0.5 outputs), plus what
    the call holds for every chunk (`held`: the span-mean running sums, 0.1885 of an output at 32 / 2 heads), stay
    within INFERENCE_EXTRA of the output; calls under 64K rows over the batch (a model's 32K prefill chunks at
    batch 1) stay one pass, and a batch of 8 x 32K is chunked like 256K."""
    from slkernels.triton_ops import function as fn
    from slkernels.triton_ops.common import cdiv

    rows = fn.inference_chunk_rows(length, 3, batch, held)
    assert -(-length // rows) == chunks
    if chunks > 1:
        assert rows % fn.CHUNK_ALIGN == 0 and batch * rows >= fn.INFERENCE_MIN_ROWS
        smallest = cdiv(cdiv(fn.INFERENCE_MIN_ROWS, batch), fn.CHUNK_ALIGN) * fn.CHUNK_ALIGN  # the floor on a chunk
        assert rows * (3 + 0.5) / length + held <= fn.INFERENCE_EXTRA or rows == smallest


def test_inference_plan_counts_every_part_of_the_running_sums_as_held(monkeypatch):
    """The span-mean running sums (hi and lo pairs, third parts and norms: 0.1885 of a bf16 output at 32 / 2 heads
    of 128 columns) are held by every chunk of an inference forward, so at 1M rows they leave chunks of 61440 rows
    (18 chunks); shapes only (the sums stood in for by empty arrays of their layout)."""
    from slkernels.triton_ops import function as fn
    from slkernels.triton_ops.prefix import KeyPrefix

    def layout(k, first_real):
        batch, heads, length, dim = k.shape
        rows = (batch, heads, length + 1)
        return KeyPrefix(torch.empty(*rows, 2, dim, dtype=torch.float16, device="meta"),
                         torch.empty(batch, heads, device="meta"), torch.empty(batch, heads, dim, device="meta"),
                         torch.empty(*rows, device="meta"), torch.empty(*rows, dim, dtype=torch.float16, device="meta"))

    monkeypatch.setattr(fn, "key_prefix", layout)
    length = 1 << 20
    q = torch.empty(1, 32, length, 128, dtype=torch.bfloat16, device="meta")
    k = torch.empty(1, 2, length, 128, dtype=torch.bfloat16, device="meta")
    cfg = SuperlinearConfig.from_dict(dict(SMALL, search_key="span_mean"))
    rows, prefix = fn.inference_plan(q, k, cfg, torch.zeros(1, dtype=torch.int64))
    assert prefix is not None and rows == 61440
    anchor_rows, none = fn.inference_plan(q, k, SuperlinearConfig.from_dict(SMALL), torch.zeros(1, dtype=torch.int64))
    assert none is None and anchor_rows == fn.inference_chunk_rows(length, 3) > rows
