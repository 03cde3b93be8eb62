"""The span-mean key's running sums kept between decode calls (`slkernels.LayerState`, `prefix.KeySums`), under
TRITON_INTERPRET=1: span means equal to float64 ones while a cache grows, only the blocks of keys that changed
written, a whole build where earlier keys, their order, the padding or the sums' range changed, and decode steps
(eager and replayed on a static cache) equal to those that build the sums anew on every call.

The interpreter must be on before Triton decorates the kernels, so the checks run in a child process (this file
with ``--worker``) whose JSON the tests read.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from interpreter_worker import interpreted_results

BLOCK = 16  # keys per block of the sums under the interpreter (`prefix._tiling`)
MEAN = dict(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0,
            search_key="span_mean")


def _worst_mean_error(torch, prefix, k, first, length: int) -> float:
    """Largest relative error of span means from `prefix` over real keys only, against float64 sums of k."""
    sums = prefix.sums()[:, :, :length + 1]
    center = prefix.center.double()
    exact = torch.nn.functional.pad(k[:, :, :length].double().cumsum(2), (0, 0, 1, 0))
    worst = 0.0
    start = int(first.max())
    for lo, hi in ((start, length), (start + 1, start + 2), (length - 1, length), (length // 2, length - 3)):
        if hi <= lo:
            continue
        got = (sums[:, :, hi] - sums[:, :, lo]) / (hi - lo) + center
        want = (exact[:, :, hi] - exact[:, :, lo]) / (hi - lo)
        worst = max(worst, float((got - want).norm() / want.norm()))
    return worst


def _growth(torch) -> dict:
    """A cache growing by one to three keys a call: per call, the blocks written and the span means' error."""
    from slkernels.triton_ops.prefix import KeySums

    torch.manual_seed(3)
    k = torch.randn(2, 2, 260, 16) + 3.0  # a large common mean, as in trained layers
    first = torch.tensor([0, 5])
    sums = KeySums()
    written, errors, sizes = [], [], []
    length = 120
    while length < 250:
        prefix = sums.update(k[:, :, :length], first)
        written.append(int(sums.written.sum(-1).max()))
        sizes.append(int(prefix.pairs.shape[2]))
        errors.append(_worst_mean_error(torch, prefix, k, first, length))
        length += 1 + len(written) % 3
    return {"written": written, "rows": sizes, "worst_error": max(errors)}


def _changes(torch) -> dict:
    """The same cache again, then with one early key changed, its batch rows swapped, its padding moved, and
    with keys whose sums outgrow the kept scale: blocks written per group, and the span means' error."""
    from slkernels.triton_ops.prefix import KeySums

    torch.manual_seed(4)
    k = torch.randn(2, 2, 100, 16) + 2.0
    first = torch.tensor([0, 5])
    sums = KeySums()
    sums.update(k, first)
    got = {}

    def step(name, keys, pad):
        prefix = sums.update(keys, pad)
        got[name] = {"written": sums.written.sum(-1).tolist(), "blocks": sums.written.shape[1],
                     "error": _worst_mean_error(torch, prefix, keys, pad, keys.shape[2])}

    step("same", k, first)
    changed = k.clone()
    changed[0, 1, 37] += 0.5  # group 1 (batch 0, head 1), block 2 of 7
    step("early_key", changed, first)
    changed[0, 0, 17:20] += torch.tensor([0.25, -0.5, 0.25])[:, None]  # group 0, block 1: its plain total unchanged
    step("total_kept", changed, first)
    step("cropped", changed[:, :, :70], first)  # 4 whole blocks and a partial one
    regrown = changed.clone()
    regrown[:, :, 70:] += 1.0  # new keys where the cropped ones were
    step("regrown", regrown, first)
    step("rows_swapped", regrown.flip(0).contiguous(), first.flip(0).contiguous())
    step("padding_moved", regrown.flip(0).contiguous(), torch.tensor([3, 0]))
    drift = regrown.flip(0).clone()
    drift[:, :, 60:] += 40.0  # far from the kept centre: the sums leave the kept scale's range
    step("sums_outgrow_scale", drift.contiguous(), torch.tensor([3, 0]))
    return got


def _decode(torch) -> dict:
    """Decode steps of a growing cache (a new K each step, GQA 16:1 and 2:1, left padding) with a LayerState
    against without: the largest output difference, and the error against the reference."""
    from slkernels import LayerState, SuperlinearConfig, superlinear_attention

    cfg = SuperlinearConfig(**MEAN)
    got = {}
    for heads_q, heads_kv in ((16, 1), (4, 2)):
        torch.manual_seed(heads_q)
        k, v = (torch.randn(2, heads_kv, 96, 16) + shift for shift in (2.0, 0.0))
        mask = torch.ones(2, 96, dtype=torch.long)
        mask[1, :6] = 0
        state, rows = LayerState(), set()
        worst = worst_ref = 0.0
        for length in (60, 61, 64, 65, 96):  # within a block, across blocks, a jump
            q, qs = (torch.randn(2, heads_q, 1, 16) for _ in range(2))
            kw = dict(cache_position=torch.tensor([length - 1]), attention_mask=mask[:, :length])
            args = (q, k[:, :, :length].clone(), v[:, :, :length].clone(), qs, cfg)
            with torch.no_grad():
                kept = superlinear_attention(*args, backend="triton", state=state, **kw)
                plain = superlinear_attention(*args, backend="triton", **kw)
                ref = superlinear_attention(*args, backend="reference", **kw)
            rows.add(int(state.key_sums.pairs.shape[1]))
            worst = max(worst, float((kept - plain).abs().max()))
            worst_ref = max(worst_ref, float((kept.double() - ref.double()).norm() / ref.double().norm()))
        got[f"gqa{heads_q // heads_kv}"] = {"kept_vs_plain": worst, "kept_vs_reference": worst_ref,
                                           "arrays": len(rows)}
    return got


def _replay(torch) -> dict:
    """Decode steps on one static cache through `decode_graphs.replayed` (its CUDA graph stood in for by
    `graph_standin`) with a LayerState, against plain decode calls: largest difference, captures made."""
    from graph_standin import standin_capture
    from slkernels import LayerState, SuperlinearConfig, decode_graphs, superlinear_attention

    captures = []
    saved = decode_graphs.GRAPH_DECODE, decode_graphs._capture, decode_graphs._eager_only
    try:
        decode_graphs._capture, decode_graphs._eager_only = standin_capture(captures), lambda device: False
        torch.manual_seed(12)
        k, v = (torch.randn(2, 2, 90, 16) + shift for shift in (1.0, 0.0))  # the static cache
        mask = torch.ones(2, 90, dtype=torch.long)
        mask[-1, :7] = 0
        state, worst = LayerState(), 0.0
        for position in (40, 41, 42, 89):
            k[:, :, position] = torch.randn(2, 2, 16) + 1.0  # the step's new key, written into the cache in place
            q, qs = (torch.randn(2, 4, 1, 16) for _ in range(2))
            outs = []
            for on, kept in ((False, None), (True, state)):
                decode_graphs.GRAPH_DECODE = on
                with torch.no_grad():
                    outs.append(superlinear_attention(q, k, v, qs, SuperlinearConfig(**MEAN), backend="triton",
                                                      cache_position=torch.tensor([position]), attention_mask=mask,
                                                      state=kept))
            worst = max(worst, float((outs[1] - outs[0]).abs().max()))
    finally:
        decode_graphs.GRAPH_DECODE, decode_graphs._capture, decode_graphs._eager_only = saved
    return {"worst": worst, "captures": len(captures)}


def _prefill_then_decode(torch) -> dict:
    """A static cache's prefill through a LayerState, then decode steps through it: the prefill makes the kept
    arrays (for the cache's whole length); the steps make none and write from the new key's block on. Each call
    against the same call without a state."""
    from slkernels import LayerState, SuperlinearConfig, superlinear_attention

    cfg = SuperlinearConfig(**MEAN)
    torch.manual_seed(21)
    k, v = torch.zeros(2, 2, 90, 16), torch.zeros(2, 2, 90, 16)  # the static cache: 50 keys written
    k[:, :, :50], v[:, :, :50] = torch.randn(2, 2, 50, 16) + 2.0, torch.randn(2, 2, 50, 16)
    mask = torch.ones(2, 90, dtype=torch.long)
    mask[1, :4] = 0
    state = LayerState()

    def both(q, qs, positions):
        kw = dict(cache_position=positions, attention_mask=mask, backend="triton")
        with torch.no_grad():
            kept = superlinear_attention(q, k, v, qs, cfg, state=state, **kw)
            plain = superlinear_attention(q, k, v, qs, cfg, **kw)
        return float((kept - plain).abs().max())

    got = {"prefill": both(*(torch.randn(2, 4, 50, 16) for _ in range(2)), torch.arange(50))}
    made = [t.data_ptr() for t in state.held()]
    got["rows"] = int(state.key_sums.pairs.shape[1])
    got["steps"] = []
    for position in (50, 51, 66):
        k[:, :, position], v[:, :, position] = torch.randn(2, 2, 16) + 2.0, torch.randn(2, 2, 16)
        diff = both(*(torch.randn(2, 4, 1, 16) for _ in range(2)), torch.tensor([position]))
        got["steps"].append({"position": position, "diff": diff, "written": state.key_sums.written.tolist(),
                             "same_arrays": [t.data_ptr() for t in state.held()] == made})
    return got


def _one_batch_row(torch) -> dict:
    """One batch row of two KV heads with padding, in column chunks (32 columns: two chunks under the interpreter):
    the span means' error of `key_prefix` and of kept sums over two calls. With one batch row the per-group first
    real keys are a broadcast view (stride 0), which a kernel indexing them by group would read past."""
    from slkernels.triton_ops.prefix import KeySums, key_prefix

    torch.manual_seed(5)
    k = torch.randn(1, 2, 150, 32) + 3.0
    first = torch.tensor([7])
    got = {"key_prefix": _worst_mean_error(torch, key_prefix(k, first), k, first, 150)}
    sums = KeySums()
    sums.update(k, first)
    k[:, :, -1] += 1.0
    got["kept"] = _worst_mean_error(torch, sums.update(k, first), k, first, 150)
    return got


def _scales(torch) -> dict:
    """`prefix._scale_of` (the kernels' rule for each group's power of two) on bounds from zero through subnormals to
    float32's largest, against the same rule from torch.frexp: 2^(FP16_EXP - e), bound < 2^e, e within +-100."""
    global prefix  # the kernel below finds it among the module's globals, as a kernel finds what it calls
    import triton
    import triton.language as tl
    from slkernels.triton_ops import prefix

    @triton.jit
    def scales(X, Y, n, NB: tl.constexpr):
        at = tl.arange(0, NB)
        tl.store(Y + at, prefix._scale_of(tl.load(X + at, mask=at < n, other=0.0)), mask=at < n)

    bound = torch.tensor([0.0, 1e-45, 1e-40, 2.0**-130, 1.5e-38, 2.0**-100, 2.0**-99 * 0.75, 0.3, 1.0, 2.0, 3.0,
                          65504.0, 2.0**99, 2.0**100, 3e38])
    got = torch.empty_like(bound)
    scales[(1,)](bound, got, bound.numel(), NB=16)
    exponent = torch.frexp(bound).exponent.clamp(-100, 100).double()
    want = torch.pow(2.0, prefix.FP16_EXP.value - exponent).float()
    return {"bound": bound.tolist(), "got": got.tolist(), "want": want.tolist()}


def _span_sums_from_parts(torch) -> dict:
    """`prefix.span_sum_rows` (what the search's rescoring and the gate backward read) on keys whose mean drifts
    along the cache, so that the centred running sums grow far past a short span's sum: largest relative error of
    spans of 1 to 8 keys against float64, by the kernels' rule (each of the three float16 parts subtracted on its
    own). The `hi` and `lo` parts alone (22 bits) are off by about 3e-4 here; all three by about 2e-6."""
    global prefix  # the kernel below finds it among the module's globals, as a kernel finds what it calls
    import triton
    import triton.language as tl
    from slkernels.triton_ops import prefix

    @triton.jit
    def span_sums(PRE, THIRD, SCALE, END, START, OUT, n, D: tl.constexpr, NB: tl.constexpr):
        i = tl.arange(0, NB)
        ok = i < n
        d = tl.arange(0, D)
        end = tl.load(END + i, mask=ok, other=0)
        start = tl.load(START + i, mask=ok, other=0)
        got = prefix.span_sum_rows(PRE, THIRD, end, start, d, ok, D) / tl.load(SCALE)
        tl.store(OUT + i[:, None] * D + d[None, :], got, mask=ok[:, None])

    length, first = 512, 3
    torch.manual_seed(8)
    k = torch.randn(1, 1, length, 16) + 64.0 * torch.linspace(-1, 1, length)[None, None, :, None]
    sums = prefix.key_prefix(k, torch.tensor([first]))
    ends = torch.tensor([length, length // 2 + 1, length // 2 + 9, first + 1, length - 40])
    starts = ends - torch.tensor([1, 1, 8, 1, 3])
    got = torch.empty(len(ends), 16)
    span_sums[(1,)](sums.pairs[0, 0], sums.third[0, 0], sums.scale[0:1], ends, starts, got, len(ends), D=16, NB=8)
    real = k.double()
    real[:, :, :first] = 0
    exact = torch.nn.functional.pad(real.cumsum(2), (0, 0, 1, 0))[0, 0]
    span = exact[ends] - exact[starts]
    want = span - (ends - starts)[:, None].double() * sums.center[0, 0].double()  # the sums are centred
    return {"worst_error": float(((got.double() - want).norm(dim=-1) / span.norm(dim=-1)).max())}


def _exact_keys_changed(torch) -> dict:
    """Keys of quarter units (every float32 block total exact, in any order) changed in ways that leave each block's
    plain totals as they were: three keys of one block moved by +1/4, -1/2, +1/4 (its weighted totals tell), a key
    of zeros appended (its block's key count tells), and on batch row 1 padding moved back over two keys of zeros
    (the group's first real key tells). Per step: blocks written per group, and the largest error of any row of the
    centred running sums against float64."""
    from slkernels.triton_ops.prefix import KeySums

    gen = torch.Generator().manual_seed(10)
    k = torch.randint(-8, 9, (2, 2, 71, 16), generator=gen).float() / 4 + 2.0
    k[:, :, 70] = 0.0
    k[1, :, 3:5] = 0.0
    sums = KeySums()
    got = {}

    def step(name, keys, first):
        prefix = sums.update(keys, first)
        length = keys.shape[2]
        real = keys.double().clone()
        for b, start in enumerate(first.tolist()):
            real[b, :, :start] = 0
        exact = torch.nn.functional.pad(real.cumsum(2), (0, 0, 1, 0))
        seen = (torch.arange(length + 1)[None, :] - first[:, None]).clamp_min(0).double()  # real keys before x
        want = exact - seen[:, None, :, None] * prefix.center.double()[:, :, None, :]
        error = (prefix.sums()[:, :, :length + 1] - want).abs().max() / exact.abs().max()
        got[name] = {"written": sums.written.sum(-1).tolist(), "blocks": sums.written.shape[1], "error": float(error)}

    first = torch.tensor([0, 5])
    step("built", k[:, :, :70], first)
    moved = k.clone()
    moved[0, 1, 17:20] += torch.tensor([0.25, -0.5, 0.25])[:, None]  # group 1, block 1 of 5
    step("totals_kept", moved[:, :, :70], first)
    step("zero_key_appended", moved, first)
    step("padding_over_zero_keys", moved, torch.tensor([0, 3]))
    return got


def _bound_scales(torch) -> dict:
    """Each group's scale from keys whose bound is known by hand (one block of 16 keys, every column alike): batch
    row 0 alternates +1 and -1 (centre 0, sums of |x| 16: bound 16, scale 2^(14 - 5)); batch row 1 holds nine
    padding keys and seven keys of 1 (centre 1: 7 |x| + 7 real keys x |centre| = 14, scale 2^(14 - 4))."""
    from slkernels.triton_ops.prefix import key_prefix

    k = torch.ones(2, 1, 16, 16)
    k[0, :, 1::2] = -1.0
    prefix = key_prefix(k, torch.tensor([0, 9]))
    return {"scale": prefix.scale.flatten().tolist(), "center": prefix.center[:, 0, 0].tolist()}


def _long_cache(torch) -> dict:
    """Span means of 400 keys: tiles of blocks past the second read of a program over the tiles' totals (it reads four
    tiles of four 16-key blocks, 256 keys, at once under the interpreter), so that its running total carries from
    one read to the next."""
    from slkernels.triton_ops.prefix import key_prefix

    torch.manual_seed(11)
    k = torch.randn(1, 2, 400, 16) + 3.0
    first = torch.tensor([5])
    return {"error": _worst_mean_error(torch, key_prefix(k, first), k, first, 400)}


def _row_norms(torch) -> dict:
    """`KeyPrefix.norm` against each stored row's norm (hi + lo, float64), for rows of 64 columns (four column
    chunks under the interpreter), with its arrays allocated full of NaN so that a row never written shows: the
    ratios' range over the rows with a norm, and rows 0 and those of padding keys (norm 0)."""
    from slkernels.triton_ops.prefix import key_prefix

    real_empty = torch.empty

    def poisoned(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    torch.manual_seed(13)
    k = torch.randn(1, 1, 50, 64) + 4.0
    torch.empty = poisoned
    try:
        prefix = key_prefix(k, torch.tensor([3]))
    finally:
        torch.empty = real_empty
    stored = prefix.pairs[0, 0].double().sum(dim=1).norm(dim=-1)
    ratio = prefix.norm[0, 0, 4:].double() / stored[4:]
    return {"ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
            "leading": prefix.norm[0, 0, :4].tolist()}


def _worker() -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from slkernels import state

    state.KEEP_MIN_KEYS = 0  # the checks' caches are short: keep their sums all the same

    print(json.dumps({"growth": _growth(torch), "changes": _changes(torch), "decode": _decode(torch),
                      "replay": _replay(torch), "prefill": _prefill_then_decode(torch),
                      "one_row": _one_batch_row(torch), "scales": _scales(torch),
                      "span_sums": _span_sums_from_parts(torch), "exact_keys": _exact_keys_changed(torch),
                      "bound_scales": _bound_scales(torch), "long_cache": _long_cache(torch),
                      "row_norms": _row_norms(torch)}))


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_results(__file__)


def test_a_growing_cache_writes_only_its_last_blocks_and_keeps_exact_means(interpreted):
    got = interpreted["growth"]
    assert got["worst_error"] < 1e-5
    # the first call and each reallocation (the cache outgrew the kept rows) write every block; the others
    # write the last block, or the last two where the new keys crossed into a new block
    grown = [i for i in range(1, len(got["rows"])) if got["rows"][i] != got["rows"][i - 1]]
    assert grown, "no call outgrew the kept rows"
    for i, written in enumerate(got["written"]):
        if i == 0 or i in grown:
            assert written > 2
        else:
            assert written <= 2, (i, got["written"])


def test_changed_keys_order_padding_or_range_are_written_again(interpreted):
    got = interpreted["changes"]
    blocks = got["same"]["blocks"]
    assert got["same"]["written"] == [0, 0, 0, 0]  # the same keys again: nothing to write
    # one key of group 1 in block 2: that block and every later one (their running sum moved), that group only
    assert got["early_key"]["written"] == [0, blocks - 2, 0, 0]
    # three keys of block 1 changed so that the block's plain total stays: its weighted total tells
    assert got["total_kept"]["written"] == [blocks - 1, 0, 0, 0]
    # cropped: the partial last block holds fewer keys (written); regrown: from that block on, every group
    assert got["cropped"]["written"] == [1] * 4 and got["cropped"]["blocks"] == 5
    assert got["regrown"]["written"] == [blocks - 4] * 4
    # batch rows swapped: every group whose keys moved (all of them) from its first block
    assert got["rows_swapped"]["written"] == [blocks] * 4
    # padding moved on batch row 0 (5 -> 3), not on row 1: every block of row 0's groups, none of row 1's
    assert got["padding_moved"]["written"] == [blocks, blocks, 0, 0]
    assert got["sums_outgrow_scale"]["written"] == [blocks] * 4
    for name, case in got.items():
        assert case["error"] < 1e-5, name


def test_one_batch_row_of_several_heads_in_column_chunks_keeps_exact_means(interpreted):
    for name, error in interpreted["one_row"].items():
        assert error < 1e-5, name


def test_each_groups_scale_is_the_power_of_two_its_bound_asks_for(interpreted):
    got = interpreted["scales"]
    assert got["got"] == got["want"], list(zip(got["bound"], got["got"], got["want"]))


def test_span_sums_subtract_all_three_parts_of_the_running_sums(interpreted):
    """A span's sum from the running sums keeps about float32's precision where the sums are far larger than it
    (keys whose mean drifts): 33 bits, not the 22 of the `hi` and `lo` parts the search's products read."""
    assert interpreted["span_sums"]["worst_error"] < 2e-5, interpreted["span_sums"]


def test_changes_that_keep_a_blocks_plain_totals_are_still_written(interpreted):
    """Keys of exact quarter units, so that the float32 totals tell nothing by rounding: a change that leaves a
    block's plain totals (a +1/4, -1/2, +1/4 pattern) is seen by its weighted totals, a key of zeros appended by the
    block's key count, and padding moved back over keys of zeros by the group's first real key; each writes the
    rows it moved, and every row of the sums stays exact."""
    got = interpreted["exact_keys"]
    blocks = got["built"]["blocks"]
    assert got["built"]["written"] == [blocks] * 4
    assert got["totals_kept"]["written"] == [0, blocks - 1, 0, 0]  # group 1, from block 1
    assert got["zero_key_appended"]["written"] == [1] * 4  # the last block of every group
    assert got["padding_over_zero_keys"]["written"] == [0, 0, blocks, blocks]  # batch row 1's groups, whole
    for name, case in got.items():
        assert case["error"] < 1e-6, (name, case)


def test_each_groups_scale_comes_from_the_bound_of_its_real_keys(interpreted):
    """The bound counts each block's sum of |x| (not of x: keys of alternating sign sum to 0) and |centre| once per
    real key, not per padding key: 16 -> 2^9 for alternating keys, 14 -> 2^10 for seven real keys of 1."""
    got = interpreted["bound_scales"]
    assert got["center"] == [0.0, 1.0]
    assert got["scale"] == [2.0**9, 2.0**10]


def test_span_means_stay_exact_over_more_tiles_than_one_read_of_them(interpreted):
    assert interpreted["long_cache"]["error"] < 1e-5, interpreted["long_cache"]


def test_row_norms_are_each_rows_norm_times_the_slack(interpreted):
    """`KeyPrefix.norm` is every column chunk's share of a row's norm together, times NORM_SLACK (rounded up past
    float32's rounding, never below the stored row's norm); row 0 and the padding rows hold 0."""
    from slkernels.triton_ops.prefix import NORM_SLACK

    got = interpreted["row_norms"]
    assert got["leading"] == [0.0] * 4
    assert 1.0 < got["ratio_min"] and got["ratio_max"] < 1.0 + 2.0**-14, got
    assert abs(got["ratio_min"] / NORM_SLACK - 1.0) < 2.0**-18 and abs(got["ratio_max"] / NORM_SLACK - 1.0) < 2.0**-18, got


def test_decode_with_kept_sums_equals_decode_that_builds_them(interpreted):
    for name, case in interpreted["decode"].items():
        assert case["kept_vs_plain"] < 1e-5, name
        assert case["kept_vs_reference"] < 1e-4, name
        assert case["arrays"] == 1, name  # rows kept beyond the cache: a growing cache does not reallocate each step


def test_replayed_decode_on_a_static_cache_with_kept_sums_equals_plain_decode(interpreted):
    got = interpreted["replay"]
    # the first call makes the sums (never captured), the second is the first of its key, the third captures
    assert got["captures"] == 1
    assert got["worst"] < 1e-5


def test_a_prefill_makes_the_kept_sums_that_its_decode_steps_extend(interpreted):
    got = interpreted["prefill"]
    assert got["prefill"] < 1e-5
    assert got["rows"] >= 91  # the static cache's whole length, so that no decode step makes arrays
    for step in got["steps"]:
        assert step["diff"] < 1e-5, step
        assert step["same_arrays"], step
        first = step["position"] // BLOCK  # the new key's block and every later one, in every group
        assert all(written == [0] * first + [1] * (len(written) - first) for written in step["written"]), step


def test_only_span_mean_calls_over_long_caches_keep_sums(monkeypatch):
    """Below KEEP_MIN_KEYS keys a whole build costs less than an update of kept sums: such calls keep nothing, make
    nothing and take no kept sums from the backend; nor does the anchor key at any length."""
    import types

    import torch
    from slkernels import LayerState, SuperlinearConfig, state, triton_backend

    mean, anchor = SuperlinearConfig(**MEAN), SuperlinearConfig(**dict(MEAN, search_key="anchor"))
    monkeypatch.setattr(state, "KEEP_MIN_KEYS", 1000)
    layer = LayerState()
    for keys, config, keeps in ((999, mean, False), (1000, mean, True), (5000, anchor, False)):
        k = torch.zeros(1, 1, keys, 4)
        assert layer.keeps(config, k) == keeps and layer.allocates(config, k) == keeps, (keys, config.search_key)
        got = triton_backend._key_sums(types.SimpleNamespace(state=layer, config=config, k=k))
        assert (got is not None) == keeps and (layer.key_sums is not None) == keeps
        layer.clear()


def test_the_kept_sums_start_at_16k_keys():
    """KEEP_MIN_KEYS is 2^14 (the update of kept sums was timed only from 16K keys on): a span-mean call over 16383
    keys keeps nothing, one over 16384 keeps its sums; the anchor key never does."""
    import torch
    from slkernels import LayerState, SuperlinearConfig

    mean, anchor = SuperlinearConfig(**MEAN), SuperlinearConfig(**dict(MEAN, search_key="anchor"))
    short, long = torch.empty(1, 1, (1 << 14) - 1, 1), torch.empty(1, 1, 1 << 14, 1)
    assert not LayerState.keeps(mean, short) and LayerState.keeps(mean, long)
    assert not LayerState.keeps(anchor, long)


def test_a_call_that_would_make_the_kept_sums_is_never_replayed_and_keys_name_the_kept_arrays(monkeypatch):
    """A replay key names the state's arrays by address: none while the state holds nothing or the call's keys do
    not fit what it holds (the call makes them, which no graph may do), another key once they are remade."""
    import torch
    from slkernels import LayerState, SuperlinearConfig, api, decode_graphs
    from slkernels import state as state_module

    monkeypatch.setattr(state_module, "KEEP_MIN_KEYS", 0)

    class Kept:  # stands in for the backend's KeySums: two arrays, and whether the call's keys fit them
        def __init__(self):
            self.arrays, self.fit = (torch.zeros(3), torch.zeros(4)), True

        def tensors(self):
            return self.arrays

        def fits(self, keys):
            return self.fit

    k = v = torch.zeros(1, 1, 8, 4)
    step = (torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), None, None)
    mean, anchor = SuperlinearConfig(**MEAN), SuperlinearConfig(**dict(MEAN, search_key="anchor"))
    state = LayerState()

    def key(config):
        held = state.held()
        return api._replay_key(k, v, held, step, config, None, "triton", state)

    saved = decode_graphs._eager_only
    try:
        decode_graphs._eager_only = lambda device: False
        assert key(mean) is None  # would make the sums
        assert key(anchor) is not None  # keeps nothing: replayed like a call without a state
        state.key_sums = Kept()
        first = key(mean)
        assert first is not None and key(mean) == first
        state.key_sums.fit = False  # keys the arrays do not fit: the call would reallocate them
        assert key(mean) is None
        state.key_sums.fit = True
        state.key_sums.arrays = (torch.zeros(3), torch.zeros(5))  # reallocated to another shape
        assert key(mean) != first
        state.clear()
        assert key(mean) is None
    finally:
        decode_graphs._eager_only = saved


def test_the_kept_arrays_take_the_bytes_nbytes_counts():
    """`KeySums.nbytes` (what a memory estimate counts) is what `_reserve` makes with the GPU's blocks."""
    import torch
    from slkernels.triton_ops import prefix

    sums = prefix.KeySums()
    tiling = prefix._tiling(128, None)
    assert not prefix.interpreting() and tiling.block == prefix.BLOCK
    sums._reserve(4, 128, 5000, tiling, torch.device("cpu"))
    assert sum(t.numel() * t.element_size() for t in sums.tensors()) == prefix.KeySums.nbytes(4, 128, 5000)


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()
