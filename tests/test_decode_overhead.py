"""Host side of the eager decode call: what one step costs on the host, whatever the device.

A decode step launches a few kernels over a long cache; called eagerly (as a generation loop calls it) its time
is the host work between the launches. These tests hold that work down on the CPU, with the kernels replaced by
recorders (the GPU code path, no device needed): over many steps on a growing cache nothing is read back to the
host, the geometry tables are built O(log n) times over n steps, and the decode itself allocates two buffers and
launches two kernels: three launches a step with the search, whose pieces (split candidates) the two kernels merge
themselves (no torch operation but allocations). A child process under ``TRITON_INTERPRET=1`` checks that the
cached tables give the very outputs (bit for bit) that tables built afresh for every call give, and that the
kernels' merge of the pieces is the search's own merge to the bit, on scores full of ties across pieces.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from dispatch_ops import LaunchRecorder, OpCounter
from interpreter_worker import interpreted_results
from slkernels import SuperlinearConfig, geometry, superlinear_attention
from slkernels.triton_ops.decode import _top_of_pieces

SMALL = dict(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0)


class _Options:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **meta)`` records the launch's keywords (constexprs and
    launch options) in `metas`."""

    def __init__(self, metas: list):
        self.metas = metas

    def __getitem__(self, grid):
        return lambda *args, **meta: self.metas.append(meta)


@pytest.fixture
def stubbed(monkeypatch):
    """The decode path with its kernels recorded instead of run, its tables cache empty and its builds counted,
    as on a GPU (no interpreter: GPU launch sizes)."""
    from slkernels import triton_backend
    from slkernels.api import _BACKENDS, available_backends
    from slkernels.triton_ops import decode, search

    available_backends()  # registers the real backends first, so that the stub below is undone to them
    launches, builds = [], []
    monkeypatch.setattr(decode, "interpreting", lambda: False)
    monkeypatch.setattr(search, "interpreting", lambda: False)
    for module, name in ((decode, "_decode_partial_kernel"), (decode, "_decode_combine_kernel"),
                         (search, "_search_kernel")):
        monkeypatch.setattr(module, name, LaunchRecorder(name, launches))
    monkeypatch.setitem(_BACKENDS, "triton", (triton_backend.triton_attention, lambda inp: True))
    monkeypatch.setattr(geometry, "_TABLES", {})
    build = geometry._build_tables

    def counted(config, capacity, device):
        builds.append(capacity)
        return build(config, capacity, device)

    monkeypatch.setattr(geometry, "_build_tables", counted)
    return launches, builds


def _step(batch, heads_q, heads_kv, len_kv, dim=16, rows=1):
    q = torch.randn(batch, heads_q, rows, dim)
    k = torch.randn(batch, heads_kv, 1, dim).expand(batch, heads_kv, len_kv, dim)  # only shapes are read
    return q, k


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_growing_cache_reads_nothing_back_and_builds_tables_log_n_times(stubbed, monkeypatch, search_key):
    """n one-token steps through the public call on a cache growing by one key per step: no host read-back in any
    step, three launches per step, and one table build per power-of-two capacity (O(log n), not n)."""
    launches, builds = stubbed
    cfg = SuperlinearConfig(**SMALL, search_key=search_key)
    if search_key == "span_mean":  # the running sums of the cache (their own kernels, rebuilt every step) left out
        from types import SimpleNamespace

        from slkernels.triton_ops import search

        sums = SimpleNamespace(pairs=torch.zeros(1, 1, 1, 2, 1), third=torch.zeros(1), scale=torch.zeros(1),
                               center=torch.zeros(1), norm=torch.zeros(1))
        monkeypatch.setattr(search, "key_prefix", lambda *args, **kw: sums)
    steps = 600
    ops = OpCounter()
    with torch.no_grad():
        for len_kv in range(1, steps + 1):
            q, k = _step(2, 4, 2, len_kv)
            with ops:
                superlinear_attention(q, k, k, q, cfg, backend="triton")
    assert ops.host_reads() == {}, ops.host_reads()
    per_step = Counter(name for name, _ in launches)
    assert per_step == {"_search_kernel": steps, "_decode_partial_kernel": steps, "_decode_combine_kernel": steps}
    assert sorted(builds) == sorted({geometry._bucket(t) for t in range(1, steps + 1)}), builds
    assert len(builds) <= math.log2(steps) + 1


def test_kept_running_sums_read_nothing_back_and_launch_six_kernels_a_step(stubbed, monkeypatch):
    """Span-mean steps on a growing cache with a `LayerState`: the kept sums' update reads nothing back to the host
    either (so a step stays capturable in a CUDA graph) and adds its six kernels (block totals, their float64 scan
    within tiles and compare with the kept ones, the tiles' offsets and the centre, the sums' bounds, the choice of
    centre, scale and first block to write, the scan of the changed blocks) to the step's three, and no torch
    operation but on the steps that make its arrays; those are made O(log n) times over n steps, not every step."""
    from slkernels import LayerState
    from slkernels import state as state_module
    from slkernels.triton_ops import prefix

    launches, _ = stubbed
    monkeypatch.setattr(state_module, "KEEP_MIN_KEYS", 0)
    monkeypatch.setattr(prefix, "interpreting", lambda: False)
    updates = ("_block_sums_kernel", "_tile_scan_kernel", "_tiles_kernel", "_bound_kernel", "_choose_kernel",
               "_scan_kernel")
    for name in updates:
        monkeypatch.setattr(prefix, name, LaunchRecorder(name, launches))
    update, in_update = prefix.KeySums.update, []

    def counted_update(self, k, first_real):  # the update's own torch operations, apart from the step's
        with OpCounter() as ops:
            out = update(self, k, first_real)
        in_update.append(ops.launches())
        return out

    monkeypatch.setattr(prefix.KeySums, "update", counted_update)
    cfg, state, steps = SuperlinearConfig(**SMALL, search_key="span_mean"), LayerState(), 600
    ops, rows = OpCounter(), []
    with torch.no_grad():
        for len_kv in range(1, steps + 1):
            q, k = _step(2, 4, 2, len_kv)
            with ops:
                superlinear_attention(q, k, k, q, cfg, backend="triton", state=state)
            rows.append(state.key_sums.pairs.shape[1])
    assert ops.host_reads() == {}, ops.host_reads()
    torch_launches = {step + 1: got for step, got in enumerate(in_update) if got}
    names = ("_search_kernel", "_decode_partial_kernel", "_decode_combine_kernel") + updates
    assert Counter(name for name, _ in launches) == {name: steps for name in names}
    # rows kept: the keys, row 0 and 4 blocks of 128 more (an eighth more where that is larger); 514 rows on the
    # first call, reallocated once, at 514 keys: the only steps with torch operations (the arrays' fills)
    assert set(rows) == {1 + 1 + 4 * 128, 514 + 1 + 4 * 128}
    assert set(torch_launches) == {1, 514}, torch_launches


def test_public_decode_without_a_mask_launches_nothing_but_the_three_kernels(stubbed):
    """The public call of a decode step with its positions and no mask (a model's unpadded generation): no torch
    operation launches a kernel (s0 = 0 is one shared tensor per batch size and device, not a fill per call), and
    that tensor, first made in inference mode, is a normal one (a training call may save it for backward)."""
    from slkernels import inputs

    launches, _ = stubbed
    inputs._NO_PADDING.pop((2, torch.device("cpu")), None)  # only this test's: CUDA graphs may read the others
    cfg = SuperlinearConfig.released()
    q, k = _step(2, 32, 2, 70_000, dim=128)
    positions = torch.tensor([69_999])
    with torch.inference_mode():
        superlinear_attention(q, k, k, q, cfg, cache_position=positions, backend="triton", check_values=False)
    for _ in range(3):
        with torch.no_grad(), OpCounter() as ops:
            superlinear_attention(q, k, k, q, cfg, cache_position=positions, backend="triton", check_values=False)
        assert ops.launches() == {}, ops.launches()
    assert len(launches) == 3 * 4
    s0 = inputs._NO_PADDING[2, torch.device("cpu")]
    assert not s0.is_inference() and s0.tolist() == [0, 0]


def test_a_capture_reads_the_shared_s0_and_makes_none(monkeypatch):
    """While a CUDA graph is being captured, a call without a mask takes the s0 tensor an earlier call made (the
    capture's warm-up), so the graph holds no fill kernel per layer and step; with none made yet it fills its own
    (from the graph's pool) and keeps none of it for later calls, which the graph's pool would own."""
    from slkernels import inputs

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    shared = torch.zeros(3, dtype=torch.int64)
    monkeypatch.setitem(inputs._NO_PADDING, (3, cuda), shared)
    assert inputs._no_padding(3, cuda) is shared
    made = []
    monkeypatch.setattr(torch, "zeros", lambda *a, **kw: made.append((a, kw)) or shared.clone())
    inputs._no_padding(5, cuda)
    assert len(made) == 1 and (5, cuda) not in inputs._NO_PADDING


def test_decode_rows_at_positions_read_nothing_back(stubbed):
    """A few rows at given positions with a padding start (the backend's arguments, as a model's cache hands
    them over), at 1M keys: no host read-back, the tables are built once for all the steps, and three launches a
    step: the search (its candidates split into pieces) and the two decode kernels, which merge the pieces
    themselves: no torch operation but allocations (a merge in torch would add a mask, a sort and two gathers)."""
    from slkernels.triton_ops.decode import superlinear_decode

    launches, builds = stubbed
    cfg = SuperlinearConfig.released()
    s0 = torch.tensor([0, 37])
    steps = []
    with torch.no_grad():
        for len_kv in range((1 << 20) + 1, (1 << 20) + 9):
            q, k = _step(2, 32, 2, len_kv, dim=128, rows=3)
            positions = torch.arange(len_kv - 3, len_kv)
            with OpCounter() as ops:
                out = superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)
            steps.append(ops)
            assert out.shape == q.shape
    assert all(ops.host_reads() == {} for ops in steps), [ops.host_reads() for ops in steps]
    assert sorted(builds) == [1 << 21]  # 2^20 + 1 .. 2^20 + 8 share one capacity (2^21)
    for ops in steps[1:]:  # (the first step builds the tables)
        assert ops.launches() == {}, ops.launches()
        assert ops.ops == {"aten.empty.memory_format": 4}, ops.ops  # the search's lists, scratch, output
    assert len(launches) == 3 * 8
    searches = [grid for name, grid in launches if name == "_search_kernel"]
    assert len(searches) == 8 and all(grid[2] > 1 for grid in searches)  # split into pieces


def test_calls_of_up_to_sixteen_rows_without_gradients_take_the_decode_path():
    """`decodes`: 1 to DECODE_MAX_ROWS (16) query rows with no gradient to record take the decode path (the calls
    `superlinear_attention` may replay from a CUDA graph); a 17th row, or a gradient to record, takes the prefill."""
    from slkernels import triton_backend
    from slkernels.inputs import check_inputs
    from slkernels.triton_ops.decode import DECODE_MAX_ROWS

    assert DECODE_MAX_ROWS == 16
    k = torch.randn(1, 1, 40, 16)

    def call(rows, grad=False):
        q = torch.randn(1, 2, rows, 16, requires_grad=grad)
        return check_inputs(q, k, k, q, SuperlinearConfig(**SMALL), None, None, None)

    assert triton_backend.decodes(call(1)) and triton_backend.decodes(call(16))
    assert not triton_backend.decodes(call(17)) and not triton_backend.decodes(call(16, grad=True))


@pytest.mark.parametrize("length, piece", [(16384, 32), (65536, 32), (1 << 20, 64), (1 << 22, 256)])
def test_search_pieces_are_short_while_rows_have_few_anchors(length, piece):
    """decode.SEARCH_SPLIT (32, 32): a row's candidates (released: 142 / 380 / 1983 / 4324 anchors at 16K / 64K / 1M
    / 4M) in pieces of the smallest power of two >= 32 anchors that leaves at most 32 pieces."""
    from slkernels.geometry import geometry_tables
    from slkernels.triton_ops import decode

    tables = geometry_tables(SuperlinearConfig.released(), length)

    def pieces(size: int) -> int:
        return -(-tables.anchor_count(length) // size)

    assert decode.search_piece(tables, length) == piece
    assert pieces(piece) <= 32 and (piece == 32 or pieces(piece // 2) > 32)


def test_decode_itself_allocates_two_buffers_and_launches_two_kernels(stubbed, monkeypatch):
    """Everything a step runs besides the search: two allocations (scratch and output), two launches, no other
    tensor operation, with the launch sizes of the tables (the chunks of the longest range at t = L_kv), for two
    query rows: the window's chunks once per KV head and row (decode.WINDOW_GROUPS) or once per query head and
    row."""
    from slkernels.triton_ops import decode

    launches, _ = stubbed
    cfg = SuperlinearConfig.released()
    len_kv, rows = 300_000, 2
    q, k = _step(1, 32, 2, len_kv, dim=128, rows=rows)
    anchors = torch.zeros(1, 32, rows, cfg.num_spans, dtype=torch.int32)
    scores = torch.zeros(1, 32, rows, cfg.num_spans)
    monkeypatch.setattr(decode, "search_topk", lambda *args, **kw: (anchors, scores))
    positions, s0 = torch.arange(len_kv - rows, len_kv), torch.zeros(1, dtype=torch.int64)
    decode.superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)  # warm-up: builds the tables
    span = int(geometry.span_tables(cfg, len_kv).back[len_kv] + geometry.span_tables(cfg, len_kv).fwd[len_kv]) + 1
    n_split_s = -(-span // decode.DECODE_TILE[0])
    n_split_w = -(-geometry.window_length(cfg) // decode.WINDOW_TILE[0])
    for groups, window in ((True, 2 * rows * n_split_w), (False, 32 * rows * n_split_w)):
        monkeypatch.setattr(decode, "WINDOW_GROUPS", groups)
        launches.clear()
        ops = OpCounter()
        with ops:
            for _ in range(5):
                decode.superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)
        assert ops.ops == {"aten.empty.memory_format": 10}, ops.ops
        step = [("_decode_partial_kernel", (window + 32 * rows * cfg.num_spans * n_split_s,)),
                ("_decode_combine_kernel", (32 * rows, 128 // decode.COMBINE_TILE[0]))]
        assert launches == step * 5, groups


def test_decode_search_takes_its_own_tiling_when_set(stubbed, monkeypatch):
    """decode.DECODE_SEARCH_TILE reaches the search kernel's launch (anchors per block, warps, stages); unset, the
    search keeps the prefill's tiling of search.SEARCH_TILES."""
    from slkernels.triton_ops import decode, search

    metas = []
    monkeypatch.setattr(search, "_search_kernel", _Options(metas))
    cfg = SuperlinearConfig.released()
    q, k = _step(1, 32, 2, 65536, dim=128)
    positions, s0 = torch.tensor([65535]), torch.zeros(1, dtype=torch.int64)
    for tile in (None, (64, 2, 3)):
        monkeypatch.setattr(decode, "DECODE_SEARCH_TILE", tile)
        decode.superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)
    assert [(m["BN"], m["num_warps"], m["num_stages"]) for m in metas] == [search.SEARCH_TILES["anchor"], (64, 2, 3)]


def test_programmatic_dependent_launch_reaches_the_three_launches_when_set(stubbed, monkeypatch):
    """decode.DECODE_PDL: the search gives the go-ahead to the kernel after it (TRIGGER), the partial kernel and the
    combine are launched with `launch_pdl` and wait inside (GDC); unset, on a GPU without it, or under the
    interpreter (which has no such instruction), none of it; None (the default) where the window's chunks are
    grouped by KV head (decode.WINDOW_GROUPS), not where they are by query row."""
    from slkernels.triton_ops import decode, search

    metas = []
    for module, name in ((decode, "_decode_partial_kernel"), (decode, "_decode_combine_kernel"),
                         (search, "_search_kernel")):
        monkeypatch.setattr(module, name, _Options(metas))
    cfg = SuperlinearConfig.released()
    q, k = _step(1, 32, 2, 65536, dim=128)
    positions, s0 = torch.tensor([65535]), torch.zeros(1, dtype=torch.int64)

    def step() -> list:
        metas.clear()
        decode.superlinear_decode(q, k, k, q, cfg, positions, s0, 0.1)
        search_meta, partial, combine = metas
        return [search_meta["TRIGGER"], partial["GDC"], partial.get("launch_pdl", False), combine["GDC"],
                combine.get("launch_pdl", False)]

    monkeypatch.setattr(decode, "DECODE_PDL", True)
    assert step() == [False] * 5  # CPU tensors: no such launch
    monkeypatch.setattr(decode, "_has_pdl", lambda device: True)
    assert step() == [True] * 5
    monkeypatch.setattr(decode, "DECODE_PDL", False)
    assert step() == [False] * 5
    monkeypatch.setattr(decode, "DECODE_PDL", None)  # on where the window's chunks are grouped by KV head
    assert step() == [True] * 5
    monkeypatch.setattr(decode, "WINDOW_GROUPS", False)
    assert step() == [False] * 5
    monkeypatch.setattr(decode, "DECODE_PDL", True)
    monkeypatch.setattr(decode, "interpreting", lambda: True)
    monkeypatch.setattr(search, "interpreting", lambda: True)
    assert step() == [False] * 5


@pytest.mark.parametrize("cfg", [SuperlinearConfig(**SMALL), SuperlinearConfig.released(),
                                 SuperlinearConfig(sw_index=5, search_power=0.4, span_power=0.6)])
def test_cached_tables_equal_a_fresh_computation(cfg, monkeypatch):
    """Every table served from the cache (including across capacity edges) is the one computed afresh from the
    formulas (the brute force's `offset` and math.pow, which share no code with the package), and a repeated call
    returns the same tensors (no work per call)."""
    monkeypatch.setattr(geometry, "_TABLES", {})
    from slkernels.naive import offset

    for t in (1, 2, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 70_000):
        offsets = geometry.anchor_table(cfg, t)
        expected, i = [], cfg.sw_index + 1
        while offset(i, cfg.search_power) <= t:
            expected.append(offset(i, cfg.search_power))
            i += 1
        assert offsets.tolist() == expected, t
        assert geometry.anchor_table(cfg, t) is offsets
        spans = geometry.span_tables(cfg, t)
        grown = np.power(np.arange(t + 1, dtype=np.float64), cfg.span_power)
        np.testing.assert_array_equal(spans.back[: t + 1].numpy(), np.ceil(cfg.backward_factor * grown))
        np.testing.assert_array_equal(spans.fwd[: t + 1].numpy(), np.ceil(cfg.forward_factor * grown))
        assert spans.back.numel() == geometry._bucket(t) + 1 and geometry.span_tables(cfg, t) is spans
        tables = geometry.geometry_tables(cfg, t)
        grow = math.pow(t, cfg.span_power)
        assert tables.span_length(t) == math.ceil(cfg.backward_factor * grow) + math.ceil(cfg.forward_factor * grow) + 1
        assert tables.width == offset(cfg.sw_index + 1, cfg.search_power) - 1 and tables.capacity == geometry._bucket(t)


# ----------------------------------------------------------------------------------- interpreted, bit for bit

CASES = {  # name: (config, batch, heads_q, heads_kv, rows, cache lengths)
    "anchor": (SMALL, 2, 4, 2, 1, [63, 64, 127, 128, 129]),
    "span_mean": (dict(SMALL, search_key="span_mean"), 2, 4, 1, 3, [63, 64, 65, 130]),
}


TIES = {  # name: (search key, keys); every case at cache length 200 (3 pieces of 4 candidates)
    "anchor_constant_keys": ("anchor", "constant"),
    "anchor_three_distinct_keys": ("anchor", "three"),
    "span_mean_constant_keys": ("span_mean", "constant"),
    "span_mean_three_distinct_keys": ("span_mean", "three"),
}


@triton.jit
def _select_kernel(ANCH, SCORE, OUT_A, OUT_S, n_pieces, KSEL: tl.constexpr, KP: tl.constexpr, NPP: tl.constexpr):
    """Stores the decode kernels' selection of each row's pieces."""
    row = tl.program_id(0).to(tl.int64)
    top_a, top_s = _top_of_pieces(ANCH, SCORE, row, n_pieces, KSEL, KP, NPP)
    cols = tl.arange(0, KP)
    tl.store(OUT_A + row * KSEL + cols, top_a, mask=cols < KSEL)
    tl.store(OUT_S + row * KSEL + cols, top_s, mask=cols < KSEL)


def _select(anchors: torch.Tensor, scores: torch.Tensor, ksel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The decode kernels' top `ksel` of pieces [..., n] (interpreted)."""
    n = anchors.shape[-1]
    top_a = torch.empty(*anchors.shape[:-1], ksel, dtype=torch.int32)
    top_s = torch.empty(*anchors.shape[:-1], ksel, dtype=torch.float32)
    _select_kernel[(anchors[..., 0].numel(),)](anchors.contiguous(), scores.contiguous(), top_a, top_s, n,
                                                KSEL=ksel, KP=triton.next_power_of_2(ksel),
                                                NPP=triton.next_power_of_2(n))
    return top_a, top_s


def _stable_merge(anchors: torch.Tensor, scores: torch.Tensor, ksel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The search's merge of its pieces: top `ksel` by a stable descending sort, none ranked -inf."""
    top = torch.sort(scores.masked_fill(anchors < 0, float("-inf")), dim=-1, descending=True, stable=True).indices
    return anchors.gather(-1, top[..., :ksel]), scores.gather(-1, top[..., :ksel])


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def _tie_results() -> dict:
    """On keys whose scores tie exactly across pieces (all keys equal, or three distinct rows): the kernels'
    selection against the search's merge (`merge=True`) of its pieces, and (three distinct rows) the decode against
    the same decode given the merged lists, bit for bit; then the selection against the sort itself on random
    pieces full of ties, -1, +-0, +-inf, NaN."""
    from slkernels.triton_ops import decode, search

    def merged_search(*args, **kw):  # the decode given the search's merged lists
        return search.search_topk(*args, **dict(kw, merge=True))

    results = {}
    for name, (search_key, keys) in TIES.items():
        cfg = SuperlinearConfig(**SMALL, search_key=search_key)
        torch.manual_seed(len(name))
        identical, selected, pieces, tied = True, True, [], 0
        for len_kv in (200,):
            q, qs = (torch.randn(2, 4, 2, 16) for _ in range(2))
            if keys == "constant":
                k = torch.full((2, 2, len_kv, 16), 0.25)
            else:
                k = torch.randn(3, 16)[torch.randint(0, 3, (2, 2, len_kv))]
            v = torch.randn(2, 2, len_kv, 16)
            positions, s0 = torch.arange(len_kv - 2, len_kv), torch.tensor([0, 5])
            raw = search.search_topk(qs, k, cfg, positions, s0, len_kv, split_candidates=4, merge=False)
            merged = search.search_topk(qs, k, cfg, positions, s0, len_kv, split_candidates=4)
            pieces.append(raw[0].shape[-1] // cfg.num_spans)
            # rows whose k-th selected score is also a score left out in another piece: the tie rule decides
            left = raw[1].masked_fill(raw[0] < 0, float("nan"))
            kth = merged[1][..., -1:]
            tied += int(((left == kth).sum(-1) > (merged[1] == kth).sum(-1)).sum())
            top_a, top_s = _select(*raw, cfg.num_spans)
            selected &= torch.equal(top_a, merged[0]) and _same_bits(top_s, merged[1])
            if keys == "constant":  # the selection above is what the decode takes (interpreted decodes are slow)
                continue
            out = decode.superlinear_decode(q, k, v, qs, cfg, positions, s0, 0.25)
            decode.search_topk = merged_search
            try:
                out_merged = decode.superlinear_decode(q, k, v, qs, cfg, positions, s0, 0.25)
            finally:
                decode.search_topk = search.search_topk
            identical &= _same_bits(out, out_merged) and bool(torch.isfinite(out).all())
        results[name] = {"identical": None if keys == "constant" else identical, "selected": selected,
                         "pieces": pieces, "tied_rows": tied}
    gen = torch.Generator().manual_seed(0)
    values = torch.tensor([1.0, 0.5, 0.0, -0.0, -2.0, float("inf"), float("-inf"), float("nan")])
    sort_ok = True
    for ksel, n_pieces in ((1, 5), (3, 4), (3, 7), (4, 3)):
        n = ksel * n_pieces
        scores = values[torch.randint(0, len(values), (64, n), generator=gen)]
        anchors = torch.randint(-1, 6, (64, n), generator=gen, dtype=torch.int32)
        top_a, top_s = _select(anchors, scores, ksel)
        want_a, want_s = _stable_merge(anchors, scores, ksel)
        sort_ok &= torch.equal(top_a, want_a) and _same_bits(top_s, want_s)
    results["random_pieces"] = sort_ok
    return results


def _order_results() -> dict:
    """Per search key: the decode step under each program order of the partial kernel (decode.CHUNK_ORDER 0, 1),
    with the window's chunks by KV head and by query row (decode.WINDOW_GROUPS) and the spans' chunks on the tensor
    cores or not (decode.SPAN_DOT): each order's output is order 0's to the bit, and each way agrees with the
    reference; a left-padded batch of two with two query rows (GQA 2:1), several chunks per range."""
    from slkernels.triton_ops import decode

    results = {}
    saved = decode.CHUNK_ORDER, decode.WINDOW_GROUPS, decode.SPAN_DOT
    try:
        for search_key in ("anchor", "span_mean"):
            cfg = SuperlinearConfig(**SMALL, search_key=search_key)
            torch.manual_seed(7)
            q, qs = (torch.randn(2, 2, 2, 16) for _ in range(2))
            k, v = (torch.randn(2, 1, 120, 16) for _ in range(2))
            positions, s0 = torch.tensor([100, 119]), torch.tensor([0, 9])
            mask = (torch.arange(120) >= s0[:, None]).long()
            ref = superlinear_attention(q, k, v, qs, cfg, attention_mask=mask, cache_position=positions,
                                        backend="reference")
            same, err = True, 0.0
            for groups, dot in ((True, False), (True, True), (False, False), (False, True)):
                decode.WINDOW_GROUPS, decode.SPAN_DOT = groups, dot
                outs = []
                for order in range(2):
                    decode.CHUNK_ORDER = order
                    outs.append(decode.superlinear_decode(q, k, v, qs, cfg, positions, s0, 0.25))
                same &= _same_bits(outs[1], outs[0]) and bool(torch.isfinite(outs[0]).all())
                err = max(err, float((outs[0] - ref).norm() / ref.norm()))
            results[search_key] = {"same": same, "ref": err}
    finally:
        decode.CHUNK_ORDER, decode.WINDOW_GROUPS, decode.SPAN_DOT = saved
    return results


def _lazy_rescale_results() -> dict:
    """A span's chunks on the tensor cores (decode.SPAN_DOT), several 16-key blocks a chunk (the interpreter's chunks
    lengthened to 64 keys), on keys whose scores along the cache rise by about 11.5 (log2 units) a block (every block
    moves the running max: decode.LAZY_RESCALE rescales), by about 3.6 a block (the max is moved only every few
    blocks, probabilities up to 2^8 in between), or fall (only the first block moves it): each step against the
    reference, and the largest difference from the step on the CUDA cores."""
    from slkernels.triton_ops import decode

    cfg = SuperlinearConfig(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=6.0,
                            forward_factor=1.0)
    saved = decode.SPAN_DOT, decode._INTERPRETER_TILE
    results = {}
    try:
        decode._INTERPRETER_TILE = (64, 16, 1, 1)
        for name, slope in (("rising", 0.5), ("slow", 0.16), ("falling", -0.5)):
            torch.manual_seed(11)
            u = torch.nn.functional.normalize(torch.randn(16), dim=0)
            q = 4 * u.expand(1, 2, 1, 16).clone()  # both query heads of the KV head along u
            qs = torch.randn(1, 2, 1, 16)
            ramp = slope * torch.arange(300.0) - (slope * 299 if slope < 0 else 0)
            k = 0.1 * torch.randn(1, 1, 300, 16) + ramp[None, None, :, None] * u
            v = torch.randn(1, 1, 300, 16)
            positions, s0 = torch.tensor([299]), torch.tensor([0])
            ref = superlinear_attention(q, k, v, qs, cfg, cache_position=positions, backend="reference")
            outs = {}
            for dot in (True, False):
                decode.SPAN_DOT = dot
                outs[dot] = decode.superlinear_decode(q, k, v, qs, cfg, positions, s0, 0.25)
            results[name] = {"ref": float((outs[True] - ref).norm() / ref.norm()),
                             "cuda_cores": float((outs[True] - outs[False]).abs().max())}
    finally:
        decode.SPAN_DOT, decode._INTERPRETER_TILE = saved
    return results


def _reach_results() -> dict:
    """Per search key: the search cut into pieces (decode: each piece tests its offsets against t, REACH_BY_MASK)
    against the search in one piece (which counts the reachable offsets first), on rows at t <= 0 (padding), small
    t, and the last position, with a left-padded batch row: the same anchors, scores within rounding."""
    from slkernels.triton_ops.search import search_topk

    results = {}
    for search_key in ("anchor", "span_mean"):
        cfg = SuperlinearConfig(**SMALL, search_key=search_key)
        torch.manual_seed(3)
        qs, k = torch.randn(2, 4, 6, 16), torch.randn(2, 2, 150, 16)
        positions, s0 = torch.tensor([0, 3, 9, 40, 100, 149]), torch.tensor([0, 30])
        whole = search_topk(qs, k, cfg, positions, s0, 150)
        pieces = search_topk(qs, k, cfg, positions, s0, 150, split_candidates=4)
        results[search_key] = {"anchors": torch.equal(whole[0], pieces[0]),
                               "scores": float((whole[1] - pieces[1]).abs().max()),
                               "none": int((whole[0] < 0).all(-1).sum()), "some": int((whole[0] >= 0).any(-1).sum())}
    return results


def _worker() -> None:
    """Child process: each case's decode steps on a growing cache with the tables cached, then again with the cache
    emptied before the call each step that was served tables an earlier step built (a step that built its own did
    just what a fresh build does); prints {case: {"identical": bool, "builds": int, "reused": int, "ref": error}},
    and the tie, order, reach and lazy-rescale results under "ties", "orders", "reach" and "lazy"."""
    os.environ["TRITON_INTERPRET"] = "1"
    from slkernels import geometry as geo

    builds = []
    build = geo._build_tables
    geo._build_tables = lambda *a: builds.append(a[1]) or build(*a)
    results = {}
    for name, (cfg_kw, batch, heads_q, heads_kv, rows, lengths) in CASES.items():
        cfg = SuperlinearConfig(**cfg_kw)
        torch.manual_seed(len(name))
        steps = []
        for len_kv in lengths:
            q, qs = (torch.randn(batch, heads_q, rows, 16) for _ in range(2))
            k, v = (torch.randn(batch, heads_kv, len_kv, 16) for _ in range(2))
            mask = torch.ones(batch, len_kv, dtype=torch.long)
            mask[-1, :5] = 0
            steps.append((q, k, v, qs, mask))
        geo._TABLES = {}
        builds.clear()
        with torch.no_grad():
            cached, reused = [], []  # reused: the step was served tables an earlier step built
            for s in steps:
                before = len(builds)
                cached.append(superlinear_attention(*s[:4], cfg, attention_mask=s[4], backend="triton"))
                reused.append(len(builds) == before)
            n_builds = len(builds)
            fresh = {}  # a step that built its own tables did what a fresh build does: only the others can differ
            for i, s in enumerate(steps):
                if reused[i]:
                    geo._TABLES = {}
                    fresh[i] = superlinear_attention(*s[:4], cfg, attention_mask=s[4], backend="triton")
            refs = [superlinear_attention(*s[:4], cfg, attention_mask=s[4], backend="reference") for s in steps]
        results[name] = {
            "identical": all(torch.equal(cached[i], out) for i, out in fresh.items()),
            "reused": len(fresh),
            "finite": all(bool(torch.isfinite(a).all()) for a in cached),
            "builds": n_builds,
            "capacities": len({geo._bucket(n) for n in lengths}),
            "ref": max(float((a - r).norm() / r.norm()) for a, r in zip(cached, refs)),
        }
    results["ties"] = _tie_results()
    results["orders"] = _order_results()
    results["reach"] = _reach_results()
    results["lazy"] = _lazy_rescale_results()
    print(json.dumps(results))


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_results(__file__)


@pytest.mark.parametrize("name", list(CASES))
def test_cached_tables_give_the_outputs_of_a_fresh_build(interpreted, name):
    got = interpreted[name]
    assert got["identical"] and got["finite"], got
    assert got["builds"] == got["capacities"], got  # one build per capacity (per config and device)
    assert got["reused"] == len(CASES[name][-1]) - got["capacities"] > 0, got  # steps served an earlier build
    assert got["ref"] < 1e-4, got


@pytest.mark.parametrize("name", list(TIES))
def test_kernels_merge_the_pieces_as_the_search_does_on_ties(interpreted, name):
    """Scores tying across pieces: the decode kernels' own merge of the search's pieces selects what the search's
    merge (`merge=True`, a stable sort) selects, and (three distinct keys) the outputs are the same bits."""
    got = interpreted["ties"][name]
    assert got["selected"] and got["identical"] is (None if name.endswith("constant_keys") else True), got
    assert got["pieces"] == [3] and got["tied_rows"] > 0, got  # several pieces, and ties that decide


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_every_program_order_and_window_way_gives_the_same_step(interpreted, search_key):
    """The partial kernel's program orders (decode.CHUNK_ORDER) map program ids to the same chunks and slots in
    another order: every order's output is order 0's to the bit; the window's chunks by KV head or by query row
    (decode.WINDOW_GROUPS), with the spans' chunks on the tensor cores or not (decode.SPAN_DOT), all give the
    reference's output."""
    got = interpreted["orders"][search_key]
    assert got["same"] and got["ref"] < 1e-5, got


@pytest.mark.parametrize("keys", ["rising", "slow", "falling"])
def test_span_chunks_on_the_tensor_cores_rescale_lazily_and_give_the_reference(interpreted, keys):
    """decode.SPAN_DOT with chunks of several blocks, on keys whose scores rise fast, rise slowly or fall along the
    cache: the lazily rescaled running max (decode.LAZY_RESCALE) gives the reference's output and the CUDA cores'."""
    got = interpreted["lazy"][keys]
    # logits up to about 150 here, which float32 holds to about 1e-5 (one CI run saw 1.09e-5 on "rising", others
    # less); a sum left unrescaled or a max never moved is off by O(1)
    assert got["ref"] < 1e-4 and got["cuda_cores"] < 1e-4, got


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_search_pieces_that_test_each_offset_select_what_one_counted_piece_does(interpreted, search_key):
    """The search kernel's REACH_BY_MASK (a row's candidates in pieces, as decode cuts them): rows that reach no anchor
    (padding), a few, and many select the anchors of the one-piece search, whose reach is counted first."""
    got = interpreted["reach"][search_key]
    assert got["anchors"] and got["scores"] < 1e-5 and got["none"] > 0 and got["some"] > 0, got


def test_program_order_follows_the_number_of_chunks(monkeypatch):
    """decode.CHUNK_ORDER None: the chunks of a span together (1) where a span has ORDER_FROM_CHUNKS chunks or more
    (released 1M: 33), the spans of all rows within a chunk index (0) below (16K: 4, 64K: 7); a set CHUNK_ORDER
    wins."""
    from slkernels.triton_ops import decode

    cfg = SuperlinearConfig.released()
    n_split = {n: decode._key_split(geometry.geometry_tables(cfg, n).span_length(n), decode.DECODE_TILE[0])[0]
               for n in (16384, 65536, 1 << 20)}
    assert n_split == {16384: 4, 65536: 7, 1 << 20: 33}
    assert [decode._chunk_order(n) for n in n_split.values()] == [0, 0, 1]
    metas = []
    for module, name in ((decode, "_decode_partial_kernel"), (decode, "_decode_combine_kernel")):
        monkeypatch.setattr(module, name, _Options(metas))
    monkeypatch.setattr(decode, "search_topk", lambda *args, **kw: (torch.zeros(1, 32, 1, 3, dtype=torch.int32),
                                                                     torch.zeros(1, 32, 1, 3)))
    for length in (65536, 1 << 20):  # the order reaches the partial kernel's launch
        q, k = _step(1, 32, 2, length, dim=128)
        decode.superlinear_decode(q, k, k, q, cfg, torch.tensor([length - 1]), torch.zeros(1, dtype=torch.int64), 0.1)
    assert [m["ORDER"] for m in metas if "ORDER" in m] == [0, 1]
    monkeypatch.setattr(decode, "CHUNK_ORDER", 0)
    assert decode._chunk_order(65) == 0


@pytest.fixture
def gpu_of_132_sms(monkeypatch):
    """A CUDA device as decode's tiling rules see it on an H100 or H200 (132 SMs, compiled kernels), for rules that
    run on the host alone."""
    from slkernels.triton_ops import decode

    monkeypatch.setattr(decode, "sm_count", lambda device: 132)
    monkeypatch.setattr(decode, "interpreting", lambda: False)
    return torch.device("cuda", 0)


def test_short_contexts_cut_spans_finer_and_group_the_window_until_the_spans_fill_the_gpu(monkeypatch, gpu_of_132_sms):
    """decode.SPAN_FILL: on a GPU of 132 SMs, released, one row of 32 query heads (96 spans): at 16K the spans' 4
    chunks of DECODE_TILE's length become 14 (10 programs per SM at least), or 9 of six blocks where
    SPAN_MIN_BLOCKS (6, 40) keeps a long span's chunks at six blocks (16K released: 53; balanced 64K's 33-block
    spans keep their 11 chunks of three blocks), at 1M the 33 stay. decode.WINDOW_GROUPS
    None: the window's chunks by KV head below GROUPS_BELOW_PER_SM span programs per SM (16K: 1344), by query row
    above (1M: 3168), at every length where the spans' chunks run on the tensor cores (decode.SPAN_DOT: 16-bit inputs
    of D <= 128), and wherever a KV head has one query head or heads have D > 128; a set value wins. Off a GPU
    (and under the interpreter) SPAN_FILL does not apply and the window is grouped wherever those two allow."""
    from slkernels.triton_ops import decode

    cfg, gpu = SuperlinearConfig.released(), gpu_of_132_sms
    target = decode.DECODE_TILE[0]
    splits = {n: decode._span_split(geometry.geometry_tables(cfg, n).span_length(n), target, 16, 96, gpu)
              for n in (16384, 1 << 20)}
    assert splits == {16384: (9, 93), 1 << 20: (33, 249)}, splits
    balanced = SuperlinearConfig.balanced()
    assert decode._span_split(geometry.geometry_tables(balanced, 65536).span_length(65536), target, 16, 96, gpu) == (11, 47)
    monkeypatch.setattr(decode, "SPAN_MIN_BLOCKS", (1, 0))
    assert decode._span_split(833, target, 16, 96, gpu) == (14, 60)
    assert decode._span_split(833, target, 16, 96, torch.device("cpu")) == (4, 209)
    assert [decode._window_groups(96 * n, 16, 128, gpu) for n, _ in splits.values()] == [True, False]
    # with the spans' chunks on the tensor cores (decode.SPAN_DOT) the window is grouped at every length
    assert all(decode._window_groups(96 * n, 16, 128, gpu, span_dot=True) for n, _ in splits.values())
    assert decode._span_dot(128, torch.bfloat16) and not decode._span_dot(128, torch.float32)
    assert not decode._span_dot(256, torch.bfloat16)
    assert decode._window_groups(10**6, 16, 128, torch.device("cpu"))
    for device in (gpu, torch.device("cpu")):  # one query head a KV head, or D = 256: by query row
        assert not decode._window_groups(96, 1, 128, device) and not decode._window_groups(96, 16, 256, device)
    monkeypatch.setattr(decode, "WINDOW_GROUPS", True)
    assert decode._window_groups(10**6, 16, 128, gpu) and decode._window_groups(96, 1, 256, gpu)
    monkeypatch.setattr(decode, "SPAN_FILL", None)
    assert decode._span_split(833, target, 16, 96, gpu) == (4, 209)


def test_a_grouped_window_takes_at_least_window_chunks_chunks(monkeypatch):
    """decode.WINDOW_CHUNKS 16: a window grouped by KV head is cut into 16 chunks at least (of WINDOW_TILE's block,
    16 keys, at least): balanced (1023 keys) 16 of 64 keys instead of 8 of 128, released (2032 keys) 16 of 127 as
    WINDOW_TILE alone gives; by query row, under the interpreter or with None, WINDOW_TILE's chunks alone."""
    from slkernels.triton_ops import decode

    monkeypatch.setattr(decode, "interpreting", lambda: False)
    target, block, _ = decode.WINDOW_TILE
    widths = {name: getattr(SuperlinearConfig, name)().window for name in ("balanced", "released")}
    assert widths == {"balanced": 1023, "released": 2032}
    assert decode._window_split(1023, target, block, True) == (16, 64)
    assert decode._window_split(2032, target, block, True) == (16, 127) == decode._key_split(2032, target)
    assert decode._window_split(40, target, block, True) == (3, 14)  # chunks of one block: 16 keys
    assert decode._window_split(1023, target, block, False) == (8, 128)
    monkeypatch.setattr(decode, "WINDOW_CHUNKS", None)
    assert decode._window_split(1023, target, block, True) == (8, 128)
    monkeypatch.setattr(decode, "WINDOW_CHUNKS", 16)
    monkeypatch.setattr(decode, "interpreting", lambda: True)
    assert decode._window_split(1023, target, block, True) == (8, 128)


def test_a_search_piece_is_the_least_power_of_two_that_leaves_at_most_32_pieces():
    """decode.search_piece where the piece doubles: 32 anchors a piece up to 32 * 32 anchors a row, then the least
    power of two that leaves at most 32 pieces (1025 anchors: 64, 2049: 128)."""
    from slkernels.triton_ops import decode

    class Counted:  # all search_piece reads of the tables: a row's anchor count
        def __init__(self, count):
            self.count = count

        def anchor_count(self, t_bound):
            return self.count

    got = {n: decode.search_piece(Counted(n), 1 << 20) for n in (0, 1, 1024, 1025, 2048, 2049, 4096, 4097)}
    assert got == {0: 32, 1: 32, 1024: 32, 1025: 64, 2048: 64, 2049: 128, 4096: 128, 4097: 256}


def test_a_span_of_exactly_order_from_chunks_chunks_runs_its_chunks_together(monkeypatch):
    """decode.CHUNK_ORDER None: ORDER_FROM_CHUNKS (32) chunks a span is the first count that takes order 1."""
    from slkernels.triton_ops import decode

    monkeypatch.setattr(decode, "CHUNK_ORDER", None)
    assert [decode._chunk_order(n) for n in (1, 31, 32, 33)] == [0, 0, 1, 1]


def test_the_window_goes_by_query_row_from_exactly_groups_below_per_sm_span_programs_an_sm(gpu_of_132_sms):
    """decode.WINDOW_GROUPS None, spans on the CUDA cores: grouped below GROUPS_BELOW_PER_SM (11) span programs per
    SM, by query row at 11 per SM exactly (132 SMs: 1452 programs)."""
    from slkernels.triton_ops import decode

    assert [decode._window_groups(n, 16, 128, gpu_of_132_sms) for n in (1451, 1452)] == [True, False]


def test_a_span_of_exactly_forty_blocks_keeps_chunks_of_six_blocks(gpu_of_132_sms):
    """decode.SPAN_MIN_BLOCKS (6, 40): a span of 40 blocks of 16 keys (640 keys) is cut for SPAN_FILL into chunks of
    six blocks (7 of 92 keys) like any longer one; at 39 blocks (624 keys) the cut stops at one block a chunk."""
    from slkernels.triton_ops import decode

    assert decode._span_split(640, 256, 16, 96, gpu_of_132_sms) == (7, 92)
    assert decode._span_split(624, 256, 16, 96, gpu_of_132_sms) == (13, 48)


def test_hopper_and_later_gpus_have_programmatic_dependent_launch(monkeypatch):
    """decode._has_pdl: compute capability 9.0 (Hopper) and later; an Ampere or Ada GPU (8.x) and the CPU not."""
    from slkernels.triton_ops import decode

    gpu = torch.device("cuda", 0)
    found = {}
    for cap in ((8, 0), (8, 9), (9, 0), (10, 0)):
        monkeypatch.setattr(decode, "capability", lambda device, cap=cap: cap)
        found[cap] = decode._has_pdl(gpu)
    assert found == {(8, 0): False, (8, 9): False, (9, 0): True, (10, 0): True}
    assert not decode._has_pdl(torch.device("cpu"))


def test_a_window_longer_than_the_cache_is_cut_as_the_cache(stubbed, monkeypatch):
    """The window's chunks cover min(W, L_kv) keys, all a row can see: released (W = 2032) over a 100-key cache, 7
    chunks of 15 keys, not 16 of 127 of which 9 hold nothing. (With W in the tens of thousands, p = 1/3 and sw_index
    31, the empty chunks were thousands of programs; under the interpreter a 2-token decode took six minutes.)"""
    from slkernels.triton_ops import decode

    widths = []
    split = decode._window_split
    monkeypatch.setattr(decode, "_window_split", lambda width, *rest: widths.append(width) or split(width, *rest))
    cfg = SuperlinearConfig.released()
    for len_kv in (100, 5000):
        q, k = _step(1, 32, 2, len_kv, dim=128)
        with torch.no_grad():
            superlinear_attention(q, k, k, q, cfg, backend="triton", check_values=False)
    assert widths == [100, 2032]
    assert split(100, *decode.WINDOW_TILE[:2], True) == (7, 15)


def test_kernels_merge_is_the_stable_sort_on_random_pieces(interpreted):
    """Random pieces full of equal scores, none (-1), +-0, +-inf and NaN: the kernels' top k is the stable
    descending sort's (NaN first, as torch sorts it), anchors and score bits alike."""
    assert interpreted["ties"]["random_pieces"] is True


def test_host_time_benchmark_times_each_launch_and_refuses_cuda_without_a_gpu():
    """benchmarks/decode_host_time.py: its launch wrapper passes every argument through and times the launch;
    `--cuda` on a machine without a GPU is one line."""
    from pathlib import Path

    from module_file import load_module

    bench = load_module(Path(__file__).resolve().parents[1] / "benchmarks" / "decode_host_time.py")
    seen = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **meta: seen.append((grid, args, meta)) or "launched"

    timed = bench._TimedLaunch(Kernel())
    assert timed[(3, 2)](1, "x", D=4) == "launched" and seen == [((3, 2), (1, "x"), {"D": 4})]
    assert timed.calls == 1 and timed.seconds > 0
    steps = []
    assert bench.seconds_per_call(lambda: steps.append(1), 7) > 0 and len(steps) == 7  # CPU work: no GPU wait
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="^error: --cuda needs a CUDA GPU"):
            bench.main(["--cuda"])


def test_decode_sweeps_of_the_profiler_have_the_shape_of_the_settings_they_replace():
    """benchmarks/profile_passes.py --decode: every alternative it times of a decode setting has that setting's
    shape (a tuple of as many integers as the default, a flag, or an order the kernel knows), so that a sweep never
    hands a launch a tiling it cannot read."""
    from pathlib import Path

    from module_file import load_module
    from slkernels.triton_ops import decode, search

    bench = load_module(Path(__file__).resolve().parents[1] / "benchmarks" / "profile_passes.py")
    defaults = {"decode": decode.DECODE_TILE, "decode window": decode.WINDOW_TILE,
                "decode search": decode.SEARCH_SPLIT, "decode search tile": search.SEARCH_TILES["anchor"],
                "decode combine": decode.COMBINE_TILE}
    for key, default in defaults.items():
        for value in bench.VARIANTS[key]:
            assert isinstance(value, tuple) and len(value) == len(default), (key, value)
            assert all(isinstance(x, int) and x > 0 for x in value), (key, value)
    assert all(isinstance(x, bool) for x in bench.VARIANTS["decode pdl"])
    assert set(bench.VARIANTS["decode order"]) <= {0, 1}


def test_decode_comparison_refuses_unknown_settings_and_a_machine_without_a_gpu(monkeypatch):
    """benchmarks/compare_passes.py --decode: a `--set` of a name decode does not hold, or of a value that is not a
    Python literal, is one error line naming it (also within a variant of several settings, apart by ";"); valid
    settings on a machine without a GPU are one line too."""
    import sys
    from pathlib import Path

    from module_file import load_module

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))  # the script imports profile_passes from its folder
    bench = load_module(folder / "compare_passes.py")
    for args, message in ((["--set", "NO_SUCH=1"], "has no setting 'NO_SUCH'"),
                          (["--set", "search_topk=1"], "has no setting 'search_topk'"),
                          (["--set", "WINDOW_TILE=(64, 16"], "must be a Python literal"),
                          (["--set", "DECODE_PDL=True; NO_SUCH=1"], "has no setting 'NO_SUCH'")):
        monkeypatch.setattr(sys, "argv", ["compare_passes.py", "--decode", *args, "16384"])
        with pytest.raises(SystemExit, match=f"^error: --set .*{message}"):
            bench.main()
    if not torch.cuda.is_available():
        monkeypatch.setattr(sys, "argv", ["compare_passes.py", "--decode", "--set", "SPAN_FILL=None; DECODE_PDL=True",
                                          "16384"])
        with pytest.raises(SystemExit, match="^error: --decode needs a CUDA GPU"):
            bench.main()


def test_decode_logs_read_summarize_and_plot_what_compare_passes_printed(tmp_path, capsys):
    """benchmarks/decode_logs.py on a log as `compare_passes.py --decode` writes it (a card line, the differences, two
    passes of timings in ms, a line that is not JSON): times in us per (setting, length, step), steps in the order
    they first appear, summary.json with the card and every row, a table line per step, and a plot whose dense SDPA
    line is drawn for released only."""
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from module_file import load_module

    logs = load_module(Path(__file__).resolve().parents[1] / "benchmarks" / "decode_logs.py")
    lines = ['{"card": "NVIDIA H200", "MiB": 143155}', "a warning"]
    for setting in ("released", "balanced"):
        for step, diff in (("slkernels", 0.0), ("dense SDPA", 0.125)):
            lines.append(json.dumps(dict(setting=setting, length=16384, layers=16, step=step, max_diff=diff)))
        for rep in (0, 1):
            for step, ms in (("slkernels", 0.019 + rep / 1e4), ("dense SDPA", 0.0125)):
                lines.append(json.dumps(dict(setting=setting, length=16384, layers=16, step=step, rep=rep, ms=ms)))
    (tmp_path / "compare-call1.log").write_text("\n".join(lines) + "\n")
    (tmp_path / "card-call1.txt").write_text("NVIDIA H200, 143771 MiB, 580.159.04\n")

    times, diffs, steps = logs.read(tmp_path / "compare-call1.log")
    assert steps == ["slkernels", "dense SDPA"]
    assert times[("released", 16384, "slkernels")] == pytest.approx([19.0, 19.1])
    assert diffs[("balanced", 16384, "dense SDPA")] == 0.125
    summary = logs.summarize(tmp_path, {"compare-call1": "a note"}, "status")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["card"].startswith("NVIDIA H200") and summary["compare-call1"]["status"] == "a note"
    assert len(summary["compare-call1"]["rows"]) == 4
    printed = capsys.readouterr().out
    assert printed.startswith("== compare-call1: a note\nreleased 16K\n")
    assert "19.0/19.1 (0e+00)" in printed and "12.5/12.5 (1e-01)" in printed
    fig, ax = plt.subplots()
    logs.plot_by_length(ax, times, (("slkernels", "mine", "o-"), ("dense SDPA", "dense SDPA", "^-")), "title")
    assert [line.get_label() for line in ax.get_lines()] == ["released: mine", "dense SDPA", "balanced: mine"]
    plt.close(fig)


def test_direct_launch_probe_passes_every_argument_in_order_and_relaunches_only_an_equal_launch():
    """decode_host_time.py --direct: the first launch of a kind goes through the kernel and keeps what it returns;
    an equal launch later goes to that compiled kernel with every argument in the kernel's order (keywords and
    defaults placed, constexprs included, launch options left out) and a 3-D grid; a launch that differs in any
    int, float or tensor alignment goes through the kernel again."""
    from pathlib import Path

    from module_file import load_module

    bench = load_module(Path(__file__).resolve().parents[1] / "benchmarks" / "decode_host_time.py")
    through, direct = [], []

    class Compiled:
        def __getitem__(self, grid):
            return lambda *args: direct.append((grid, args))

    class Kernel:
        @staticmethod
        def fn(X, n, scale, D=8, FLAG=False):
            pass

        def __getitem__(self, grid):
            return lambda *args, **meta: through.append((grid, args, meta)) or Compiled()

    launch = bench._DirectLaunch(Kernel())
    x = torch.zeros(64)
    launch[(4,)](x, 5, 0.5, FLAG=True, num_warps=4)
    assert through == [((4,), (x, 5, 0.5), {"FLAG": True, "num_warps": 4})] and not direct
    launch[(4,)](x, 5, 0.5, FLAG=True, num_warps=4)
    assert direct == [((4, 1, 1), (x, 5, 0.5, 8, True))] and len(through) == 1
    launch[(4,)](x, 6, 0.5, FLAG=True, num_warps=4)  # another int: Triton may specialize it otherwise
    launch[(4,)](x[1:], 5, 0.5, FLAG=True, num_warps=4)  # a pointer off 16-byte alignment
    launch[(4,)](x, 5, 0.5, FLAG=True, num_warps=8)  # other launch options
    assert len(through) == 4 and len(direct) == 1
    assert launch.calls == 5 and launch.direct == 1


if __name__ == "__main__" and "--worker" in sys.argv:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _worker()
