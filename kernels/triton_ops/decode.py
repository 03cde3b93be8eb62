"""Decode path: a few query rows (one new token) against a long cache, without any host read-back.

Work per row is tiny in rows but long in keys, so the row's window and k spans are cut into fixed
chunks of keys that run in parallel (split-K, "flash decoding"); a second kernel merges the chunks of
each range, joins every span with the window and mixes them with the gate. The window is the same keys for every
query head of a KV head, so its chunks score the group's heads together on the tensor cores (each key read once
per group); a span is one head's, so its chunks score one row, on the tensor cores too where the inputs allow
(SPAN_DOT: the row repeated to fill the tile). All shapes depend only on
L_kv (the static cache length) and the config, never on data, so the whole call can be captured in a
CUDA graph: positions and the padding start are read on the device.

With the "span_mean" search key the search needs the running sums of the whole cache. Without a `KeySums` they are
built anew on every call (`prefix.key_prefix`): one pass over K that writes every row's sums, at 1M of context about
2 ms per layer and step on an H100, where a whole Nano-shaped model's compiled step took 2.4x the anchor key's
(benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/). With one (the caller's
`slkernels.LayerState`), a call reads K once and writes only the blocks of keys that changed.

An eager call is host work between launches, so the host side is kept to the minimum: the geometry tables come
from `geometry.geometry_tables` (built on the device once per power-of-two capacity, so a cache growing by one token
per step builds them O(log n) times), launch sizes are plain integer arithmetic on the host copies of those
tables (no tensor is read, on either device), and the partial results of the key chunks share one scratch buffer.
The search's candidates are split into pieces searched in parallel; their top-k lists are not merged by the search
(a mask, a stable sort and two gathers in torch: five more launches a step) but by the two kernels themselves, each
program taking the row's top k from the pieces in registers (`_top_of_pieces`), with the very order of the merge.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..config import SuperlinearConfig
from ..geometry import GeometryTables, geometry_tables
from .common import LOG2E, NEG_BIG, capability, cdiv, dot_precision, interpreting, next_pow2, sm_count, span_range
from .prefix import KeyPrefix, KeySums
from .search import search_topk

__all__ = ["superlinear_decode", "DECODE_MAX_ROWS"]

# Up to this many query rows (and no gradient) the backend takes the decode path.
DECODE_MAX_ROWS = 16
# How decode's search splits a row's candidates into pieces searched in parallel: (anchors per piece, at least;
# pieces per row, at most), the pieces' size a power of two. Released: 142 / 380 / 1983 anchors at 16K / 64K / 1M ->
# pieces of 32 / 32 / 64. The search is on the step's critical path (the spans wait for it), so short pieces help
# where rows have few anchors: on an H200 the step took 31 / 40 us at 16K / 64K against 33 / 46 with pieces of 128
# at every length, 125 us at 1M either way (benchmarks/results/decode-search-pieces-h200-2026-12-02/).
SEARCH_SPLIT = (32, 32)
# The search's tiling in decode, (anchors per block, warps, stages); None: the prefill's (search.SEARCH_TILES). A
# decode row's search runs few programs (5 per row at 16K released), so its best tiling may differ:
# `benchmarks/profile_passes.py --decode` times the alternatives of its VARIANTS["decode search tile"].
DECODE_SEARCH_TILE = None
# Tiling of a span's chunks on a GPU: (keys per chunk, about; keys per block; warps of every program of the partial
# kernel; pipeline stages of a span's or a window's chunk by query row). `benchmarks/profile_passes.py --decode` times
# the alternatives of its VARIANTS["decode"]. Two stages copy the next block while one is merged; before, the loop was
# a plain `range`, which Triton does not pipeline. Measured on an H200, 16 steps over 16 caches in one graph
# (benchmarks/results/decode-pipelined-spans-h200-2026-12-02/, call 3), two stages against none: released 19.0 /
# 22.0 / 26.7 / 42.0 / 53.6 / 106.0 us at 16K / 32K / 64K / 128K / 256K / 1M against 19.0 / 23.8 / 30.5 / 42.2 /
# 65.8 / 115.6; three stages were slower (23.1 us at 16K, call 2), four slower still (26.1: 24 KB of shared memory a
# program). Chunks of about 256 keys rather than 128 (lengths where SPAN_FILL does not cut them finer; call 3): 36.5
# against 42.1 us at 128K, 50.4 against 57.2 at 256K, balanced 1M 35.1 against 41.0.
DECODE_TILE = (256, 16, 1, 2)
# Tiling of the window's chunks by KV head on a GPU (WINDOW_GROUPS): (keys per chunk, about; keys per block; pipeline
# stages). Chunks of 64 or 256 keys were no faster (benchmarks/results/decode-window-groups-h200-2026-12-02/);
# `profile_passes.py --decode` times the alternatives of its VARIANTS["decode window"]. Two stages against one, with
# the spans' loop in two (benchmarks/results/decode-pipelined-spans-h200-2026-12-02/, call 5): released 18.9 / 21.7 /
# 26.9 us at 16K / 32K / 64K against 19.3 / 22.0 / 27.2, balanced equal.
WINDOW_TILE = (128, 16, 2)
# The least number of chunks a window grouped by KV head is cut into on a GPU (chunks of WINDOW_TILE's keys per block at
# least; None: off): the window's chunks are the partial kernel's longest programs where spans are short. The balanced
# window (1023 keys) then takes 16 chunks of 64 keys, not 8 of 128: 15.1 against 17.6 us at 16K, 17.1 / 18.0 at 32K,
# 18.0 / 18.5 at 64K (decode-last-merge-h200-2026-12-02/, call 3); the released one (2032 keys) 16 chunks of 127 keys
# either way.
WINDOW_CHUNKS = 16
# Tiling of the combine on a GPU: (columns of D per program, warps). One program per row merged all D columns of its
# ranges' chunks (at 1M about 130 KB read a row, by 32 programs at B = 1); programs over slices of D read less each.
# Measured on an H200, released, partial + combine as graph replays (benchmarks/results/decode-combine-h200-2026-12-02/):
# 0.029 / 0.036 / 0.111 ms at 16K / 64K / 1M against 0.030 / 0.038 / 0.114 for whole rows (128, 4).
# `profile_passes.py --decode` times the alternatives of its VARIANTS["decode combine"].
COMBINE_TILE = (16, 1)
# Programmatic dependent launch (on Hopper and later GPUs): the search lets the partial kernel start while it runs, and
# the partial kernel lets the combine start; each waits (`gdc_wait`) before it reads what the one before wrote. The
# window's programs need nothing from the search, so they read and attend their keys while the search runs and wait
# only before they write. Exact on H200s (the GPU decode tests and the generation tests through converted models pass
# with it). None: on where the window's chunks are grouped by KV head (WINDOW_GROUPS), off where they are by query row.
# Timed as a model's graph holds the step (16 steps over 16 caches in one graph, `compare_passes.py --decode
# --layers 16`) on one H200 (benchmarks/results/decode-last-merge-h200-2026-12-02/, call 3), on / off: released
# 21.8 / 22.8-23.8, 26.5 / 28.5, 32.9 / 34.6 us at 16K / 32K / 64K (grouped), but 51.1 / 43.4, 64.8-65.5 / 68.0,
# 86.3 / 80.5, 119.5 / 116.1 at 128K / 256K / 512K / 1M (by query row; 1M 119.2-120.2 / 115.8 on a second machine);
# balanced faster with it at every length (17.5-18.4 / 23.0 at 16K, 41.1 / 42.8 at 1M).
DECODE_PDL = None
# With DECODE_PDL, where the partial kernel lets the combine start: False, every program at its start; True, a window's
# program at its start and a span's once it has waited for the search (`gdc_wait`). The combine, which then starts
# only after the search has ended, merges the search's pieces and takes the gates before its own wait, off the chain
# that follows the partial kernel. (The window's programs, the longest where spans are short, would hold the combine
# back if they too let it start only after their wait.) Timed on an H200 as a model's graph holds the step
# (benchmarks/results/decode-span-chunks-h200-2026-12-02/, call 3), True / False: released 18.5 / 18.6-18.7, 21.1-21.2 /
# 21.3-21.4, 25.8 / 26.4, 35.2-35.3 / 35.9, 49.7 / 50.1-50.2, 109.2-109.4 / 109.1-109.3 us at 16K / 32K / 64K / 128K
# / 256K / 1M; balanced 12.5-12.8 / 12.6 at 16K, 0.2-0.6 us faster at 64K-1M. Every program letting it start after
# its wait (call 2): 17.8 against 18.5-18.6 at released 16K, but 22.5 against 21.5 at 32K and 0.5-0.9 slower at
# balanced 16K.
GATES_BEFORE_WAIT = True
# The order in which the partial kernel's span programs start (after every window chunk): 0 the spans of every row
# within a chunk index, 1 the chunks of a span together. None: 1 where a span has at least ORDER_FROM_CHUNKS chunks
# (the step is several waves of programs), else 0.
CHUNK_ORDER = None
ORDER_FROM_CHUNKS = 32
# Whether a window chunk scores the G query heads of a KV head together (`_window_chunk`: each key read once per
# group, on the tensor cores) or one query row (`_row_chunk`, as a span's chunk). The grouped chunks' tiles raise
# the partial kernel's registers for every program (164 a thread against 96 at one warp, sm_90), so fewer programs
# share an SM. None: grouped where a KV head has several query heads of D <= 128 and the spans' programs number below
# GROUPS_BELOW_PER_SM per SM, or wherever the spans' chunks run on the tensor cores (SPAN_DOT). Measured with the
# spans on the CUDA cores on an H200, B = 1, 32 / 2 heads, graph replays
# (benchmarks/results/decode-window-groups-h200-2026-12-02/, call 3): grouped, released 16K / 32K / 64K 24.4 / 26 /
# 36.7 us against 28 / 30.4 / 40.1 by rows (1056 / 960 / 1344 span programs);
# by rows from 128K (2016 programs: 47.5 against 58) to 1M (119.8 against 123.7), and at 1M balanced (1536 programs:
# 47.7 against 58.5). The rule picks wrong at 256K released (2880 programs: 71.7 against 66.5).
WINDOW_GROUPS = None
GROUPS_BELOW_PER_SM = 11
# The least number of span programs per SM: where chunks of DECODE_TILE's length would leave the GPU short of
# programs (short contexts, few rows), spans are cut into more, shorter chunks (16 keys at least). None: off.
# Measured as above: 8 took released 16K from 26.5 to 24.5 us, balanced 128K / 256K from 28.9 / 33.4 to 24.3 / 29.5
# (call 3). 10 against 8 (benchmarks/results/decode-early-loads-h200-2026-12-02/, 16 steps a graph): released 19.0-19.3
# against 20.1-20.4 us at 16K (14 chunks of 60 keys, four blocks, against 11 of 76, five), 24.0-24.6 against 25.0-25.3
# at 32K; balanced 0.4-0.5 us slower at 16K and 64K (16K 13.9-14.0 against 13.5-13.7), 0.9-1.1 faster at 32K-256K
# (256K 24.2 against 25.3). From 11 the span programs pass GROUPS_BELOW_PER_SM and the window goes by query row: 31 us
# at 16K.
SPAN_FILL = 10
# The fewest blocks (of DECODE_TILE's keys per block) a span's chunk is cut to where SPAN_FILL cuts spans finer, for
# spans that hold at least so many blocks: (blocks, from); (1, 0) leaves SPAN_FILL's cut alone. With the loop
# pipelined, six blocks for every span took released 16K to 18.0-18.1 us (9 chunks of 93 keys) against 18.5-18.6 (14
# of 60), but balanced 16K-64K (spans of 17-33 blocks) 1.1-2.2 us longer (benchmarks/results/decode-span-chunks-h200-
# 2026-12-02/, call 1; 4 and 8 no better anywhere). Six only for spans of at least 40 blocks (released 16K's hold 53),
# against none, in one process (benchmarks/results/decode-prefetch-h200-2026-12-03/, call 2, as LONG_SPAN_BLOCKS):
# released 16K 18.2-18.3 against 18.6-18.7 us, every other length of both settings within 0.1 us (balanced 128K and
# 256K, whose chunks it also changes, included). (5, 40) and (7, 40): released 16K 18.7 and 19.0 against 18.1-18.2
# (benchmarks/results/decode-span-floor-h200-2026-12-03/).
SPAN_MIN_BLOCKS = (6, 40)
# Whether a span's chunk scores its query on the tensor cores (`_attend_keys`: the query in every row of a [16 x D]
# tile, [16 x D] @ [D x BN] and the probabilities' product with V in V's dtype, as the window's chunks by KV head,
# keys indexed in int32 and the accumulator rescaled lazily, LAZY_RESCALE) or one row at a time in float32 on the CUDA
# cores (`_attend_row`); 16-bit inputs of D <= 128 only (`_span_dot`). Where it does, the window's chunks are grouped
# by KV head at every length (`_window_groups`: the kernel holds the grouped tiles' registers anyway). Compiled for
# sm_90 (`benchmarks/sass_report.py decode:dot`, Triton 3.6), a block of 16 keys is 276 instructions (348 in a block
# that moves the running max) against 734 on the CUDA cores. Measured on an H200, 16 steps over 16 caches in one graph
# (benchmarks/results/decode-span-dot-2026-12-05/compare-call1.log), against the spans on the CUDA cores with the
# window's old rule: released 16.6 / 19.2 / 24.4 / 48.1 / 101.6 us at 16K / 32K / 64K / 256K / 1M against 18.3 / 21.3
# / 26.1 / 49.7 / 107.4 (dense SDPA 12.5 / 16.0 / 23.8 / 68.1 / 242); balanced 11.8 / 13.1 / 14.4 / 20.8 / 33.3
# against 12.8 / 14.1 / 15.2 / 21.7 / 34.0. With the window grouped by the old rule alone: equal but at 1M (107.4);
# with the window by query row from 128K: 104.9 at 1M.
SPAN_DOT = True
# With SPAN_DOT, how far (log2 units) a block must raise a span chunk's running max before the chunk's sum and [16 x D]
# accumulator are rescaled to it (`_attend_keys`' LEAN): probabilities stay below 2^8, well inside bf16 and float32.
LAZY_RESCALE: tl.constexpr = tl.constexpr(8.0)
# Tiny shapes under TRITON_INTERPRET: several chunks and blocks per span, several chunks per window.
_INTERPRETER_TILE = (16, 16, 1, 1)
_INTERPRETER_WINDOW = (4, 16, 1)


@triton.jit
def _top_of_pieces(ANCH, SCORE, row, n_pieces, KSEL: tl.constexpr, KP: tl.constexpr, NPP: tl.constexpr):
    """One row's selection from the search's unmerged pieces (`search_topk(..., merge=False)`: `n_pieces` columns a
    row, -1 = none): anchors (int32) and scores (float32) [KP], the first KSEL columns the row's top KSEL in
    descending order, the rest -1 and 0. The order is that of the stable descending sort that merges the pieces
    otherwise: none ranks as -inf, equal scores keep the earlier column first (within a piece and across pieces,
    the larger anchor), and NaN ranks above everything (as torch sorts it). KSEL rounds of max; the picked entries
    are moved as integers (a score's bits unchanged, -0.0 and NaN included), so the selection equals the merge's
    to the bit. The lists come from L2 (".cg"), never from an SM's L1: another kernel wrote them, and with
    GATES_BEFORE_WAIT the combine reads them before its wait."""
    c = tl.arange(0, NPP)
    cols = tl.arange(0, KP)
    inb = c < n_pieces
    base = row * n_pieces
    a = tl.load(ANCH + base + c, mask=inb, other=-1, cache_modifier=".cg")
    bits = tl.load(SCORE + base + c, mask=inb, other=0.0, cache_modifier=".cg").to(tl.int32, bitcast=True)
    some = a >= 0
    rank = tl.where(some, bits.to(tl.float32, bitcast=True), float("-inf"))
    nan = some & ((bits & 0x7FFFFFFF) > 0x7F800000)
    out = ~inb  # columns out of play: past the row, or already taken
    top_a = tl.full([KP], -1, tl.int32)
    top_bits = tl.zeros([KP], tl.int32)
    for j in tl.static_range(KSEL):
        m = tl.max(tl.where(out | nan, float("-inf"), rank), axis=0)
        c_nan = tl.min(tl.where(nan & ~out, c, NPP), axis=0)
        c_max = tl.min(tl.where(~out & ~nan & (rank == m), c, NPP), axis=0)
        at = c == tl.where(c_nan < NPP, c_nan, c_max)
        top_a = tl.where(cols == j, tl.sum(tl.where(at, a, 0), axis=0), top_a)
        top_bits = tl.where(cols == j, tl.sum(tl.where(at, bits, 0), axis=0), top_bits)
        out = out | at
    return top_a, top_bits.to(tl.float32, bitcast=True)


@triton.jit
def _attend_keys(q, k_base, v_base, c_lo, c_hi, skl, skd, svl, svd, qk_scale,
                 D: tl.constexpr, BN: tl.constexpr, GP: tl.constexpr, STAGES: tl.constexpr, UPCAST: tl.constexpr,
                 PREC: tl.constexpr, LEAN: tl.constexpr = False):
    """Running max, sum and accumulator of the [GP x D] query tile `q` over keys c_lo..c_hi (inclusive) of one KV
    head, blocks of BN keys on the tensor cores ([GP x D] @ [D x BN], then the probabilities in V's dtype @ [BN x D]),
    STAGES pipeline stages: the loop of the window's chunks by KV head (a row per query head) and of a span's chunks
    with SPAN_DOT (the one query in every row). LEAN (a span's chunks): keys indexed in int32 from c_lo, and the
    running max moved, with the sum and the accumulator rescaled, only where a block raises it by more than
    LAZY_RESCALE (log2 units): otherwise the block's probabilities are taken against the running max, at most
    2^LAZY_RESCALE, and the [GP x D] accumulator is not touched. The result is the same softmax (sum and
    accumulator always share one max); what it saves is the accumulator's rescaling in most blocks."""
    offs_d = tl.arange(0, D)
    m_i = tl.full([GP], NEG_BIG, tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, D], tl.float32)
    if LEAN:
        k_base = k_base + c_lo * skl
        v_base = v_base + c_lo * svl
        first = 0
        last = (c_hi - c_lo).to(tl.int32)
    else:
        first = c_lo
        last = c_hi
    for n0 in tl.range(first, last + 1, BN, num_stages=STAGES):
        kidx = n0 + tl.arange(0, BN)
        kin = kidx <= last
        kt = tl.load(k_base + kidx[None, :] * skl + offs_d[:, None] * skd, mask=kin[None, :], other=0.0)
        vb = tl.load(v_base + kidx[:, None] * svl + offs_d[None, :] * svd, mask=kin[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            vb = vb.to(tl.float32)
        s = tl.dot(q, kt, input_precision=PREC) * qk_scale
        s = tl.where(kin[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        if LEAN:
            if tl.max(m_new - m_i, axis=0) > LAZY_RESCALE:
                alpha = tl.exp2(m_i - m_new)
                l_i = l_i * alpha
                acc = acc * alpha[:, None]
                m_i = m_new
            p = tl.exp2(s - m_i[:, None])
            l_i = l_i + tl.sum(p, axis=1)
            acc = acc + tl.dot(p.to(vb.dtype), vb, input_precision=PREC)
        else:
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=PREC)
            m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _window_chunk(Q, K, V, POS, S0, PART, pid, n_split_w, chunk_w, n_slots,
                  sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
                  H_Q, H_KV, L_Q, G, W, qk_scale,
                  D: tl.constexpr, BNW: tl.constexpr, GP: tl.constexpr, WSTAGES: tl.constexpr, UPCAST: tl.constexpr,
                  PREC: tl.constexpr, WAIT: tl.constexpr):
    """One chunk of the window of the G query heads of one KV head at one row: the window's keys are the same for
    all of them, so the heads are scored together ([GP x D] @ [D x BNW] on the tensor cores, heads padded to GP)
    and every key is read once per group instead of once per head; the probabilities enter the product with V in
    V's dtype, as in the prefill's passes. Running max, sum and accumulator per head into the scratch buffer's
    window slots (row * n_split_w + split); WAIT: wait for the kernel before (DECODE_PDL) before the stores."""
    split = pid % n_split_w
    grp = pid // n_split_w  # (b * H_kv + kv) * L_q + r
    r = grp % L_Q
    kv = (grp // L_Q) % H_KV
    b = grp // (L_Q * H_KV)
    pos = tl.load(POS + r).to(tl.int64)
    s0 = tl.load(S0 + b).to(tl.int64)
    lo = tl.maximum(pos - W + 1, s0)
    c_lo = lo + split * chunk_w
    c_hi = tl.minimum(pos, c_lo + chunk_w - 1)

    heads = tl.arange(0, GP)
    hmask = heads < G
    h = kv * G + heads
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b.to(tl.int64) * sqb + h.to(tl.int64)[:, None] * sqh + r.to(tl.int64) * sql
                + offs_d[None, :] * sqd, mask=hmask[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + kv.to(tl.int64) * svh
    m_i, l_i, acc = _attend_keys(q, k_base, v_base, c_lo, c_hi, skl, skd, svl, svd, qk_scale,
                                 D, BNW, GP, WSTAGES, UPCAST, PREC)
    if WAIT:  # DECODE_PDL: write only once the search has ended
        tl.extra.cuda.gdc_wait()
    row = ((b * H_Q + h) * L_Q + r).to(tl.int64)
    slot = row * n_split_w + split
    pm, pl, pacc = _parts(PART, n_slots)
    tl.store(pm + slot, m_i, mask=hmask)
    tl.store(pl + slot, l_i, mask=hmask)
    tl.store(pacc + slot[:, None] * D + offs_d[None, :], acc, mask=hmask[:, None])


@triton.jit
def _row_chunk(Q, K, V, ANCH, SCORE, POS, S0, BACK, FWD, PART, row_all, jj, split, chunk_s, slot, n_slots, n_pieces,
               sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
               H_Q, L_Q, G, W, t_cap, qk_scale,
               D: tl.constexpr, BN: tl.constexpr, STAGES: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr,
               NPP: tl.constexpr, IS_WINDOW: tl.constexpr, WAIT: tl.constexpr, LATE: tl.constexpr,
               DOT: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr):
    """Chunk `split` (of `chunk_s` keys) of one range of query row `row_all` ((b * H_q + h) * L_q + r): its window
    (IS_WINDOW) or its span `jj` (the span of the jj-th of the row's top k, from the search's pieces). Running max,
    sum and accumulator into scratch slot `slot`. One head's keys are scored one row at a time (a [BN x D] block
    against the query, in float32, `_attend_row`): no tensor-core tiles, few registers, many programs per SM. STAGES
    pipeline stages copy the next block's keys and values to shared memory while one is merged. WAIT: wait for the
    kernel before (DECODE_PDL); a window needs nothing from it and waits only before its stores, a span before it
    reads the search's lists, after the loads that need nothing from it (position, query, the span tables), which
    then leave the chain that follows the search. LATE (a span's chunk): let the kernel after start once this
    program has waited (GATES_BEFORE_WAIT). DOT (SPAN_DOT): the keys scored on the tensor cores instead
    (`_attend_keys`, the query in all 16 rows of its tile; the first row is stored)."""
    r = row_all % L_Q
    bh = row_all // L_Q
    h = bh % H_Q
    b = bh // H_Q
    kv = h // G
    pos = tl.load(POS + r).to(tl.int64)
    s0 = tl.load(S0 + b).to(tl.int64)
    offs_d = tl.arange(0, D)
    q_row = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + r.to(tl.int64) * sql
    if DOT:
        tile_rows = tl.arange(0, 16)
        q = tl.load(q_row + tile_rows[:, None] * 0 + offs_d[None, :] * sqd)
        if UPCAST:
            q = q.to(tl.float32)
    else:
        q = tl.load(q_row + offs_d * sqd).to(tl.float32)
    if IS_WINDOW:
        lo = tl.maximum(pos - W + 1, s0)
        hi = pos
    else:
        t = pos + 1 - s0
        tc = tl.minimum(tl.maximum(t, 0), t_cap)
        back = tl.load(BACK + tc)
        fwd = tl.load(FWD + tc)
        if WAIT:
            tl.extra.cuda.gdc_wait()
            if LATE:
                tl.extra.cuda.gdc_launch_dependents()
        top_a, _ = _top_of_pieces(ANCH, SCORE, row_all.to(tl.int64), n_pieces, KSEL, KP, NPP)
        a = tl.sum(tl.where(tl.arange(0, KP) == jj, top_a, 0), axis=0).to(tl.int64)
        lo, hi = span_range(a, back, fwd, s0, pos, W)
        hi = tl.where(a >= 0, hi, lo - 1)  # no anchor: an empty range
    c_lo = lo + split * chunk_s
    c_hi = tl.minimum(hi, c_lo + chunk_s - 1)

    k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + kv.to(tl.int64) * svh
    if DOT:
        m_t, l_t, acc_t = _attend_keys(q, k_base, v_base, c_lo, c_hi, skl, skd, svl, svd, qk_scale,
                                       D, BN, 16, STAGES, UPCAST, PREC, True)
    else:
        m_i, l_i, acc = _attend_row(q, k_base, v_base, c_lo, c_hi, skl, skd, svl, svd, qk_scale, D, BN, STAGES)
    if WAIT and IS_WINDOW:
        tl.extra.cuda.gdc_wait()
    pm, pl, pacc = _parts(PART, n_slots)
    if DOT:  # every row of the tile holds the same results: the first is stored
        first = tile_rows == 0
        tl.store(pm + slot + tile_rows * 0, m_t, mask=first)
        tl.store(pl + slot + tile_rows * 0, l_t, mask=first)
        tl.store(pacc + slot * D + tile_rows[:, None] * 0 + offs_d[None, :], acc_t, mask=first[:, None])
    else:
        tl.store(pm + slot, m_i)
        tl.store(pl + slot, l_i)
        tl.store(pacc + slot * D + offs_d, acc)


@triton.jit
def _attend_row(q, k_base, v_base, c_lo, c_hi, skl, skd, svl, svd, qk_scale,
                D: tl.constexpr, BN: tl.constexpr, STAGES: tl.constexpr):
    """Running max, sum and accumulator of one float32 query row `q` [D] over keys c_lo..c_hi (inclusive) of one KV
    head, blocks of [BN x D] keys in float32 on the CUDA cores, STAGES pipeline stages (a plain `range` loop is not
    pipelined: each block would wait for its own loads)."""
    offs_d = tl.arange(0, D)
    m_i = tl.max(tl.full([BN], NEG_BIG, tl.float32), axis=0)
    l_i = tl.sum(tl.zeros([BN], tl.float32), axis=0)
    acc = tl.zeros([D], tl.float32)
    for n0 in tl.range(c_lo, c_hi + 1, BN, num_stages=STAGES):
        kidx = n0 + tl.arange(0, BN)
        kin = kidx <= c_hi
        kb = tl.load(k_base + kidx[:, None] * skl + offs_d[None, :] * skd, mask=kin[:, None], other=0.0).to(tl.float32)
        s = tl.sum(kb * q[None, :], axis=1) * qk_scale
        s = tl.where(kin, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        vb = tl.load(v_base + kidx[:, None] * svl + offs_d[None, :] * svd, mask=kin[:, None], other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * vb, axis=0)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _decode_partial_kernel(
    Q, K, V, ANCH, SCORE, POS, S0, BACK, FWD, PART,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    svb, svh, svl, svd,
    H_Q, H_KV, L_Q, G, W, t_cap, n_window, chunk_w, n_split_w, chunk_s, n_split_s, span_base, n_slots, n_pieces,
    sm_scale,
    D: tl.constexpr, BN: tl.constexpr, STAGES: tl.constexpr, BNW: tl.constexpr, GP: tl.constexpr,
    WSTAGES: tl.constexpr, KSEL: tl.constexpr,
    KP: tl.constexpr, NPP: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr, GDC: tl.constexpr,
    ORDER: tl.constexpr, GROUPS: tl.constexpr, LATE: tl.constexpr, DOT: tl.constexpr,
):
    """The first `n_window` programs: the window's chunks, with GROUPS a KV head's query heads together
    (`_window_chunk`), else a query row's (`_row_chunk`); they need nothing from the search, so they start first
    (with DECODE_PDL, while the search runs). Then one program per chunk of a span, in the order ORDER gives
    (`CHUNK_ORDER`): 1 a span's chunks together, 0 a chunk index's spans together; DOT (SPAN_DOT) a span's keys on
    the tensor cores."""
    pid = tl.program_id(0)
    qk_scale = sm_scale * LOG2E
    if GDC and (not LATE or pid < n_window):  # DECODE_PDL: the combine may be scheduled now (LATE: a span's program
        tl.extra.cuda.gdc_launch_dependents()  # once it has waited for the search)
    if pid < n_window:  # with DECODE_PDL a window writes only once the search has ended (the scratch buffer may
        # hold memory the search is still using)
        if GROUPS:
            _window_chunk(Q, K, V, POS, S0, PART, pid, n_split_w, chunk_w, n_slots,
                          sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd, H_Q, H_KV, L_Q, G, W, qk_scale,
                          D, BNW, GP, WSTAGES, UPCAST, PREC, GDC)
        else:
            _row_chunk(Q, K, V, ANCH, SCORE, POS, S0, BACK, FWD, PART, pid // n_split_w, 0, pid % n_split_w,
                       chunk_w, pid.to(tl.int64), n_slots, n_pieces, sqb, sqh, sql, sqd, skb, skh, skl, skd,
                       svb, svh, svl, svd, H_Q, L_Q, G, W, t_cap, qk_scale, D, BN, STAGES, KSEL, KP, NPP, True, GDC,
                       False, False, UPCAST, PREC)
    else:  # with DECODE_PDL a span waits for the search's lists (`_row_chunk`)
        sp = pid - n_window
        if ORDER == 1:
            rng = sp // n_split_s
            split = sp % n_split_s
        else:
            n_spans = (tl.num_programs(0) - n_window) // n_split_s
            rng = sp % n_spans
            split = sp // n_spans
        slot = span_base + rng.to(tl.int64) * n_split_s + split
        _row_chunk(Q, K, V, ANCH, SCORE, POS, S0, BACK, FWD, PART, rng // KSEL, rng % KSEL, split, chunk_s, slot,
                   n_slots, n_pieces, sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
                   H_Q, L_Q, G, W, t_cap, qk_scale, D, BN, STAGES, KSEL, KP, NPP, False, GDC, LATE, DOT, UPCAST, PREC)


@triton.jit
def _parts(PART, n_slots):
    """The three regions of the scratch buffer: running max [n_slots], sum [n_slots], accumulator [n_slots, D]."""
    n = n_slots.to(tl.int64)
    return PART, PART + n, PART + 2 * n


@triton.jit
def _merge(PM, PL, PACC, base, n_split, offs_d, D: tl.constexpr, SB: tl.constexpr, ONE: tl.constexpr):
    """One range's running max, sum and accumulator (its columns `offs_d`) from its `n_split` chunks, merged SB chunks
    at a time (on a GPU SB covers them all; under the interpreter 2, so that tiny ranges take several rounds), with
    loads from L2 (".cg"). ONE (SB >= n_split, known on the host): the one round without a loop, so that the loads of
    a row's ranges need not wait for one another (a loop of one round each put four L2 round trips in a row); the
    same operations, so the same bits. The combine compiles for sm_90 without spilling (tests/test_sass_report.py)."""
    m = tl.max(tl.full([SB], NEG_BIG, tl.float32), axis=0)
    total = tl.sum(tl.zeros([SB], tl.float32), axis=0)
    acc = tl.zeros(offs_d.shape, tl.float32)
    if ONE:
        return _merge_round(PM, PL, PACC, base, 0, n_split, offs_d, m, total, acc, D, SB)
    for s0 in range(0, n_split, SB):
        m, total, acc = _merge_round(PM, PL, PACC, base, s0, n_split, offs_d, m, total, acc, D, SB)
    return m, total, acc


@triton.jit
def _merge_round(PM, PL, PACC, base, s0, n_split, offs_d, m, total, acc, D: tl.constexpr, SB: tl.constexpr):
    """Chunks s0 .. s0 + SB - 1 of a range merged into its running max, sum and accumulator."""
    sp = s0 + tl.arange(0, SB)
    smask = sp < n_split
    ms = tl.load(PM + base + sp, mask=smask, other=NEG_BIG, cache_modifier=".cg")
    ls = tl.load(PL + base + sp, mask=smask, other=0.0, cache_modifier=".cg")
    accs = tl.load(PACC + (base + sp)[:, None] * D + offs_d[None, :], mask=smask[:, None], other=0.0,
                   cache_modifier=".cg")
    m_new = tl.maximum(m, tl.max(ms, axis=0))
    old = tl.exp2(m - m_new)
    sc = tl.exp2(ms - m_new)
    return m_new, total * old + tl.sum(ls * sc, axis=0), acc * old + tl.sum(accs * sc[:, None], axis=0)


@triton.jit
def _decode_combine_kernel(
    ANCH, SCORE, PART, OUT, n_split_w, n_split_s, span_base, n_slots, n_pieces,
    D: tl.constexpr, DC: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr, SBW: tl.constexpr, SBS: tl.constexpr,
    NPP: tl.constexpr, GDC: tl.constexpr, ONE_W: tl.constexpr, ONE_S: tl.constexpr, LATE: tl.constexpr,
):
    """One program a row and DC of its D columns: each range's chunks merged, every span joined with the window,
    mixed by the gate (the softmax of the row's top-k scores); the window alone where the row has no span. (The
    columns' programs repeat the row's few scalar merges; each reads only its columns of the chunks' accumulators.)
    LATE (GATES_BEFORE_WAIT): the search has ended before this kernel starts, so the gates come before the wait."""
    if GDC and not LATE:  # DECODE_PDL: launched while the partial kernel runs, it waits for its results
        tl.extra.cuda.gdc_wait()
    row_all = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * DC + tl.arange(0, DC)
    cols = tl.arange(0, KP)
    anchors, scores = _top_of_pieces(ANCH, SCORE, row_all, n_pieces, KSEL, KP, NPP)
    ok = anchors >= 0
    top = tl.max(tl.where(ok, scores, NEG_BIG), axis=0)
    ex = tl.where(ok, tl.exp(scores - top), 0.0)
    gates = ex / tl.maximum(tl.sum(ex, axis=0), 1e-30)
    if GDC and LATE:
        tl.extra.cuda.gdc_wait()

    PM, PL, PACC = _parts(PART, n_slots)
    m_w, l_w, a_w = _merge(PM, PL, PACC, row_all * n_split_w, n_split_w, offs_d, D, SBW, ONE_W)
    out = a_w / tl.where(l_w > 0, l_w, 1.0)
    mixed = tl.zeros([DC], tl.float32)
    for j in tl.static_range(KSEL):
        m_s, l_s, a_s = _merge(PM, PL, PACC, span_base + (row_all * KSEL + j) * n_split_s, n_split_s, offs_d, D,
                               SBS, ONE_S)
        m = tl.maximum(m_w, m_s)
        cw = tl.exp2(m_w - m)
        cs = tl.exp2(m_s - m)
        o_j = (a_w * cw + a_s * cs) / tl.maximum(l_w * cw + l_s * cs, 1e-30)
        g = tl.sum(tl.where(cols == j, gates, 0.0), axis=0)
        mixed += g * o_j
    any_span = tl.sum(ok.to(tl.int32), axis=0) > 0
    out = tl.where(any_span, mixed, out)
    tl.store(OUT + row_all * D + offs_d, out.to(OUT.dtype.element_ty))


def _key_split(length: int, target: int, least: int = 1, min_keys: int = 1) -> tuple[int, int]:
    """(chunks, keys per chunk) of a range of up to `length` keys cut into chunks of about `target` keys, or into
    more of them where that leaves fewer than `least` chunks (chunks of `min_keys` keys at least)."""
    n_split = cdiv(max(length, 1), target)
    want = min(least, cdiv(max(length, 1), min_keys))
    if want > n_split:
        n_split = cdiv(max(length, 1), cdiv(max(length, 1), want))
    return n_split, cdiv(max(length, 1), n_split)


def _span_split(length: int, target: int, block: int, n_spans: int, device: torch.device) -> tuple[int, int]:
    """(chunks, keys per chunk) of a span of up to `length` keys (the longest, at t = t_bound): chunks of about
    `target` keys, or more of them where `n_spans` spans would leave fewer than SPAN_FILL programs per SM, and then
    as few chunks as take that many blocks of `block` keys each (a program's time goes by its blocks)."""
    if SPAN_FILL is None or interpreting() or device.type != "cuda":
        return _key_split(length, target)
    least, long_from = SPAN_MIN_BLOCKS
    least = least if cdiv(length, block) >= long_from else 1
    _, chunk = _key_split(length, target, cdiv(SPAN_FILL * sm_count(device), n_spans), least * block)
    return _key_split(length, cdiv(chunk, block) * block)


def search_pieces(q_search, k, config: SuperlinearConfig, positions, first_real, t_bound: int, pdl: bool = False,
                  tables: GeometryTables | None = None, prefix: KeyPrefix | None = None):
    """The decode step's search: the candidates split into pieces (`search_piece`; 4 anchors under the interpreter),
    searched in parallel with DECODE_SEARCH_TILE's tiling, their top-k lists left unmerged (`search_topk`); with
    `pdl` (`_pdl`: DECODE_PDL) it lets the partial kernel start while it runs. `tables`: the step's
    `geometry_tables(config, t_bound, k.device)` when the caller holds them; `prefix`: the span-mean key's running
    sums when the caller holds them (else `search_topk` builds them)."""
    interp = interpreting()
    block_n, warps, stages = (None,) * 3 if interp or DECODE_SEARCH_TILE is None else DECODE_SEARCH_TILE
    if tables is None:
        tables = geometry_tables(config, t_bound, k.device)
    piece = 4 if interp else search_piece(tables, t_bound)
    return search_topk(q_search, k, config, positions, first_real, t_bound, block_n=block_n, num_warps=warps,
                       num_stages=stages, split_candidates=piece, merge=False, launch_dependents=pdl, prefix=prefix)


def search_piece(tables: GeometryTables, t_bound: int) -> int:
    """Anchors per search piece of a decode row with up to `t_bound` tokens seen (SEARCH_SPLIT), from the host
    copy of the anchor table."""
    least, pieces = SEARCH_SPLIT
    return max(least, next_pow2(cdiv(max(tables.anchor_count(t_bound), 1), pieces)))


def _chunk_order(n_split: int) -> int:
    """The partial kernel's program order (CHUNK_ORDER) for spans of `n_split` chunks."""
    if CHUNK_ORDER is not None:
        return CHUNK_ORDER
    return 1 if n_split >= ORDER_FROM_CHUNKS else 0


def _window_groups(span_programs: int, group: int, dim: int, device: torch.device, span_dot: bool = False) -> bool:
    """Whether the window's chunks score a KV head's `group` query heads together (WINDOW_GROUPS) beside
    `span_programs` programs of span chunks: never for one head a KV head (nothing is shared) nor for heads of
    D > 128 (a [16 x D] float32 accumulator and its operands in one warp's registers would spill), always under
    the interpreter and off a GPU otherwise; on a GPU always where the spans' chunks run on the tensor cores
    (`span_dot`: their tiles hold the kernel's registers anyway), else below GROUPS_BELOW_PER_SM span programs an SM."""
    if WINDOW_GROUPS is not None:
        return WINDOW_GROUPS
    if group < 2 or dim > 128:
        return False
    if interpreting() or device.type != "cuda" or span_dot:
        return True
    return span_programs < GROUPS_BELOW_PER_SM * sm_count(device)


def _span_dot(dim: int, dtype: torch.dtype) -> bool:
    """Whether a span's chunks score their query on the tensor cores (SPAN_DOT): never for D > 128 (the [16 x D]
    float32 accumulator would spill, as `_window_groups` says of the window's), nor on a GPU for float32 inputs,
    whose exact products run on the CUDA cores: sixteen times the work of one row (under the interpreter any dtype,
    so that the CPU tests check the path)."""
    return SPAN_DOT and dim <= 128 and (interpreting() or dtype in (torch.bfloat16, torch.float16))


def _pdl(device: torch.device, groups: bool) -> bool:
    """Whether this step launches with programmatic dependent launch: DECODE_PDL (None: where the window's chunks are
    grouped, `groups`), on a GPU that has it (never under the interpreter)."""
    wanted = groups if DECODE_PDL is None else DECODE_PDL
    return wanted and not interpreting() and _has_pdl(device)


def _window_split(width: int, target: int, block: int, groups: bool) -> tuple[int, int]:
    """(chunks, keys per chunk) of a window of `width` keys: chunks of about `target` keys, or, where its chunks are
    grouped by KV head on a GPU (`groups`; `_window_groups`), more of them where that leaves fewer than WINDOW_CHUNKS
    (chunks of `block` keys at least)."""
    if WINDOW_CHUNKS is None or not groups or interpreting():
        return _key_split(width, target)
    return _key_split(width, target, WINDOW_CHUNKS, block)


def _has_pdl(device: torch.device) -> bool:
    return device.type == "cuda" and capability(device)[0] >= 9  # Hopper and later


def superlinear_decode(q, k, v, q_search, config: SuperlinearConfig, positions, first_real, scale,
                       key_sums: KeySums | None = None):
    """Superlinear attention of a few rows (no gradient); capturable in a CUDA graph after one warm-up call.

    The warm-up call caches the geometry tables on the device; later calls read no tensor on the host, allocate
    only device memory of fixed size (the search's lists, one scratch buffer, the output) and launch the search
    and two kernels: three launches a step. The search's candidates are split into pieces whose top-k lists both
    kernels merge themselves (`_top_of_pieces`: the selection of `search_topk`'s own merge, bit for bit).
    `key_sums` ("span_mean"): the running sums kept from the layer's earlier calls (`prefix.KeySums`), updated here
    instead of built anew.
    """
    batch, heads_q, len_q, dim = q.shape
    heads_kv, len_kv = k.shape[1], k.shape[2]
    interp = interpreting()
    ksel = config.num_spans
    t_bound = max(len_kv, 1)
    tables = geometry_tables(config, t_bound, q.device)
    target, block, warps, stages = _INTERPRETER_TILE if interp else DECODE_TILE
    target_w, block_w, stages_w = _INTERPRETER_WINDOW if interp else WINDOW_TILE
    rows = batch * heads_q * len_q
    n_split_s, chunk_s = _span_split(tables.span_length(t_bound), target, block, rows * ksel, q.device)
    group = heads_q // heads_kv
    span_dot = _span_dot(dim, q.dtype)
    groups = _window_groups(rows * ksel * n_split_s, group, dim, q.device, span_dot)
    # a window holds at most min(W, L_kv) keys: chunks past the cache would be programs with nothing to do
    n_split_w, chunk_w = _window_split(min(tables.width, t_bound), target_w, block_w, groups)
    span_base = rows * n_split_w  # the scratch slots: every row's window chunks, then every span's
    n_slots = cdiv(span_base + rows * ksel * n_split_s, 16) * 16  # each region starts 64-byte aligned
    part = torch.empty(n_slots * (dim + 2), dtype=torch.float32, device=q.device)
    out = torch.empty(batch, heads_q, len_q, dim, dtype=q.dtype, device=q.device)
    n_window = (batch * heads_kv * len_q if groups else rows) * n_split_w  # rows: batch * heads_q * len_q
    pdl = _pdl(q.device, groups)
    prefix = key_sums.update(k, first_real) if key_sums is not None else None
    anchors, scores = search_pieces(q_search, k, config, positions, first_real, t_bound, pdl, tables, prefix)
    n_pieces = anchors.shape[-1]  # a multiple of k: one top-k list per piece
    launch = {"launch_pdl": True} if pdl else {}
    _decode_partial_kernel[(n_window + rows * ksel * n_split_s,)](
        q, k, v, anchors, scores, positions, first_real, tables.spans.back, tables.spans.fwd, part,
        *q.stride(), *k.stride(), *v.stride(),
        heads_q, heads_kv, len_q, group, tables.width, tables.capacity, n_window, chunk_w, n_split_w, chunk_s,
        n_split_s, span_base, n_slots, n_pieces, scale,
        D=dim, BN=block, STAGES=stages, BNW=block_w, GP=max(16, next_pow2(group)), WSTAGES=stages_w, KSEL=ksel,
        KP=next_pow2(ksel), NPP=next_pow2(n_pieces), UPCAST=interp, PREC=dot_precision(q.dtype), GDC=pdl,
        ORDER=_chunk_order(n_split_s), GROUPS=groups, LATE=GATES_BEFORE_WAIT, DOT=span_dot,
        num_warps=warps, num_stages=stages,
        **launch,
    )
    cols, warps = (dim // 2, 1) if interp else (min(COMBINE_TILE[0], dim), COMBINE_TILE[1])
    sbw, sbs = (2, 2) if interp else (next_pow2(n_split_w), next_pow2(n_split_s))  # chunks merged a round
    _decode_combine_kernel[(rows, dim // cols)](
        anchors, scores, part, out, n_split_w, n_split_s, span_base, n_slots, n_pieces,
        D=dim, DC=cols, KSEL=ksel, KP=next_pow2(ksel), SBW=sbw, SBS=sbs, NPP=next_pow2(n_pieces), GDC=pdl,
        ONE_W=sbw >= n_split_w, ONE_S=sbs >= n_split_s, LATE=GATES_BEFORE_WAIT, num_warps=warps, **launch,
    )
    return out
