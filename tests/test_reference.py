"""The PyTorch reference against the per-query float64 loop of docs/semantics.md (`slkernels.naive`), and its
consequences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.naive import dense_causal, first_real, naive_superlinear_attention, window

POWERS = (0.5, 0.55, 1 / 3)
FORWARD = (0.0, 1.0)
SW = (0, 1, 5)
LENGTHS = (1, 2, 77, 333, 1000)
GQA = ((1, 1), (4, 2), (16, 1))


def test_the_naive_reference_shares_no_code_with_the_package():
    """`slkernels.naive` judges every backend, so it must not import the helpers it judges (a mistake in a shared
    offset, window or span rule would then hide in both)."""
    import ast
    from pathlib import Path

    import slkernels.naive

    tree = ast.parse(Path(slkernels.naive.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "." for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "math", "torch"}


def _inputs(batch, heads_q, heads_kv, len_q, len_kv, dim, dtype=torch.float64, gen=None, search_gain=3.0):
    gen = gen or torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    q = rnd(batch, heads_q, len_q, dim)
    k = rnd(batch, heads_kv, len_kv, dim)
    v = rnd(batch, heads_kv, len_kv, dim)
    # A sharper router than unit normals, so that top-k and the gate matter.
    qs = rnd(batch, heads_q, len_q, dim) * search_gain
    return q, k, v, qs


def _rows(length, cfg):
    """All rows for short inputs; for long ones a sample that includes both ends and the window edge."""
    if length <= 333:
        return list(range(length))
    w = window(cfg)
    picks = {0, 1, length - 1, length - 2, min(w, length - 1), min(w + 1, length - 1), min(w + 2, length - 1)}
    picks |= set(range(0, length, 37))
    return sorted(picks)


def _grid():
    """Every length x GQA pair, each with a different (power, forward, sw, num_spans), plus the full
    (power, forward, sw) product at one length: every value of every parameter appears many times."""
    combos = list(itertools.product(POWERS, FORWARD, SW))
    cases = []
    for n, (length, gqa) in enumerate(itertools.product(LENGTHS, GQA)):
        power, fwd, sw = combos[(5 * n) % len(combos)]
        cases.append((length, gqa, power, fwd, sw, 1 + n % 4))
    for n, (power, fwd, sw) in enumerate(combos):
        cases.append((200, (4, 2), power, fwd, sw, 1 + n % 4))
    # GQA 16:1 where rows search (several candidates past the window, top-k ranking them) at odd lengths
    cases += [(157, (16, 1), 0.5, 1.0, 1, 2), (311, (16, 1), 0.55, 0.0, 0, 3), (263, (16, 1), 1 / 3, 1.0, 1, 1)]
    return cases


@pytest.mark.parametrize("length,gqa,power,fwd,sw,num", _grid())
def test_reference_matches_brute_force(length, gqa, power, fwd, sw, num):
    cfg = SuperlinearConfig(
        sw_index=sw, num_spans=num, search_power=power, span_power=power, backward_factor=2.0, forward_factor=fwd
    )
    heads_q, heads_kv = gqa
    dim = 8
    gen = torch.Generator().manual_seed(length * 31 + heads_q)
    q, k, v, qs = _inputs(1 if heads_q == 16 else 2, heads_q, heads_kv, length, length, dim, gen=gen)
    rows = _rows(length, cfg)
    if (heads_q, heads_kv) == (16, 1) and length > 100:  # the cases added for 16:1 do search
        assert max(rows) + 1 > cfg.window + cfg.num_spans + 1
    got = superlinear_attention(q, k, v, qs, cfg, backend="reference")
    want = naive_superlinear_attention(q, k, v, qs, cfg, rows=rows)
    torch.testing.assert_close(got[:, :, rows], want[:, :, rows], atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
@pytest.mark.parametrize("length,gqa,search_power,span_power,sw", [
    (181, (4, 2), 0.5, 0.65, 1), (233, (16, 1), 0.4, 0.3, 0), (199, (2, 1), 0.6, 0.45, 2), (157, (16, 1), 0.5, 0.7, 0),
])
def test_anchor_and_span_powers_apart_match_brute_force(length, gqa, search_power, span_power, sw, search_key):
    """The grid above ties span_power to search_power (the paper's settings do); a rule that read one for the other
    would pass it. Here they differ, the window is 0 in two cases, and both search keys run."""
    cfg = SuperlinearConfig(sw_index=sw, num_spans=2, search_power=search_power, span_power=span_power,
                            backward_factor=2.0, forward_factor=1.0, search_key=search_key)
    tied = SuperlinearConfig(**{**cfg.to_dict(), "span_power": search_power})
    heads_q, heads_kv = gqa
    gen = torch.Generator().manual_seed(length)
    q, k, v, qs = _inputs(1, heads_q, heads_kv, length, length, 8, gen=gen)
    got = superlinear_attention(q, k, v, qs, cfg, backend="reference")
    want = naive_superlinear_attention(q, k, v, qs, cfg)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)
    assert (got - superlinear_attention(q, k, v, qs, tied, backend="reference")).abs().max() > 1e-3


def test_released_setting_long_rows():
    """The paper's setting (W = 2032) on a length where search is active for most rows."""
    cfg = SuperlinearConfig()
    assert cfg.window == 2032
    q, k, v, qs = _inputs(1, 2, 1, 64, 3000, 8)
    got = superlinear_attention(q, k, v, qs, cfg)
    want = naive_superlinear_attention(q, k, v, qs, cfg)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)


def _cfg_small():
    return SuperlinearConfig(sw_index=3, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0)


def test_short_sequences_equal_dense_causal():
    cfg = _cfg_small()  # W = 15
    q, k, v, qs = _inputs(2, 4, 2, cfg.window + 1, cfg.window + 1, 8)
    got = superlinear_attention(q, k, v, qs, cfg)
    torch.testing.assert_close(got, dense_causal(q, k, v), atol=1e-12, rtol=1e-10)
    # One token longer and search starts: the last row must no longer be dense.
    q, k, v, qs = _inputs(2, 4, 2, 3 * cfg.window, 3 * cfg.window, 8)
    got = superlinear_attention(q, k, v, qs, cfg)
    assert (got[:, :, -1] - dense_causal(q, k, v)[:, :, -1]).abs().max() > 1e-3


def test_an_explicit_scale_is_the_token_softmax_scale():
    """`scale` replaces 1/sqrt(D) in the token softmax (hosts such as Granite pass their own) and never touches the
    router scores: dense causal attention at that scale while t <= W + 1, the brute force at that scale past it."""
    cfg = _cfg_small()  # W = 15
    q, k, v, qs = _inputs(1, 4, 2, 60, 60, 8)
    got = superlinear_attention(q, k, v, qs, cfg, scale=0.05, backend="reference")
    short = cfg.window + 1
    torch.testing.assert_close(got[:, :, :short], dense_causal(q, k, v, scale=0.05)[:, :, :short], atol=1e-12,
                               rtol=1e-10)
    torch.testing.assert_close(got, naive_superlinear_attention(q, k, v, qs, cfg, scale=0.05), atol=1e-10, rtol=1e-9)
    assert (got - superlinear_attention(q, k, v, qs, cfg, backend="reference")).abs().max() > 1e-2


def test_the_brute_force_gives_zeros_for_a_batch_row_of_padding_only():
    """A batch row whose mask holds no real token has s0 = L_kv (`first_real`): every query row of it lies in the
    padding, and the brute force gives zeros for them (docs/semantics.md), not the attention of an unpadded row."""
    cfg = _cfg_small()
    q, k, v, qs = _inputs(2, 2, 1, 40, 40, 4)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[0] = 0
    assert first_real(mask, 0, 40) == 40 and first_real(mask, 1, 40) == 0
    got = naive_superlinear_attention(q, k, v, qs, cfg, attention_mask=mask)
    assert got[0].abs().max() == 0 and got[1].abs().min() > 0


def test_dense_causal_puts_fewer_query_rows_than_keys_at_the_last_positions():
    """Without cache_position, the L_q rows of `dense_causal` sit at the last L_q key positions (a decode row sees
    every key). With q = 0 every softmax is uniform, so row r is the mean of v over keys 0 .. L_kv - L_q + r."""
    v = torch.arange(10, dtype=torch.float64).view(1, 1, 5, 2)
    k = torch.randn(1, 1, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    want = torch.tensor([[3.0, 4.0], [4.0, 5.0]], dtype=torch.float64)  # means of v[0..3] and v[0..4]
    torch.testing.assert_close(dense_causal(q, k, v)[0, 0], want)


def test_chunked_prefill_and_decode_match_full_prefill():
    cfg = _cfg_small()
    length = 301
    q, k, v, qs = _inputs(2, 4, 2, length, length, 8)
    full = superlinear_attention(q, k, v, qs, cfg)
    # A middle chunk sees the cache (first 200 keys) and its own keys.
    chunk = slice(120, 200)
    got = superlinear_attention(q[:, :, chunk], k[:, :, :200], v[:, :, :200], qs[:, :, chunk], cfg)
    torch.testing.assert_close(got, full[:, :, chunk], atol=1e-12, rtol=1e-10)
    # Explicit cache_position with the whole key axis present: future keys are never read.
    pos = torch.arange(chunk.start, chunk.stop)
    got = superlinear_attention(q[:, :, chunk], k, v, qs[:, :, chunk], cfg, cache_position=pos)
    torch.testing.assert_close(got, full[:, :, chunk], atol=1e-12, rtol=1e-10)
    # Decode: one row against the whole cache.
    got = superlinear_attention(q[:, :, -1:], k, v, qs[:, :, -1:], cfg)
    torch.testing.assert_close(got, full[:, :, -1:], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_chunk_and_decode_with_padding_at_16_to_1_match_brute_force(search_key):
    """A middle chunk (at its cache_position) and a decode row, left padded, GQA 16:1, each judged by the brute
    force directly (not only by the reference's own full prefill)."""
    cfg = SuperlinearConfig(sw_index=3, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0, search_key=search_key)
    length, pad = 233, 29
    q, k, v, qs = _inputs(2, 16, 1, length, length, 8, gen=torch.Generator().manual_seed(7))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :pad] = 0
    for rows, keys in ((slice(121, 190), 190), (slice(length - 1, length), length)):
        part = [x[:, :, rows] for x in (q, qs)]
        pos = torch.arange(rows.start, rows.stop)
        got = superlinear_attention(part[0], k[:, :, :keys], v[:, :, :keys], part[1], cfg, cache_position=pos,
                                    attention_mask=mask[:, :keys], backend="reference")
        want = naive_superlinear_attention(part[0], k[:, :, :keys], v[:, :, :keys], part[1], cfg, cache_position=pos,
                                           attention_mask=mask[:, :keys])
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)


def test_left_padding():
    cfg = _cfg_small()
    length, pad = 150, 37
    q, k, v, qs = _inputs(2, 4, 2, length, length, 8)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :pad] = 0
    q[1, :, :pad] *= 1e4  # garbage in the padding must not leak anywhere
    k[1, :, :pad] *= 1e4
    got = superlinear_attention(q, k, v, qs, cfg, attention_mask=mask)
    assert torch.isfinite(got).all()
    assert got[1, :, :pad].abs().max() == 0
    alone = superlinear_attention(q[1:, :, pad:], k[1:, :, pad:], v[1:, :, pad:], qs[1:, :, pad:], cfg)
    torch.testing.assert_close(got[1:, :, pad:], alone, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got[:1], superlinear_attention(q[:1], k[:1], v[:1], qs[:1], cfg), atol=1e-12, rtol=1e-10)
    want = naive_superlinear_attention(q, k, v, qs, cfg, attention_mask=mask, rows=range(0, length, 7))
    torch.testing.assert_close(got[:, :, ::7], want[:, :, ::7], atol=1e-12, rtol=1e-10)
    # Left padding during decode.
    dec = superlinear_attention(q[:, :, -1:], k, v, qs[:, :, -1:], cfg, attention_mask=mask)
    torch.testing.assert_close(dec, got[:, :, -1:], atol=1e-12, rtol=1e-10)


def test_all_padding_row_is_zero_and_extreme_logits_stay_finite():
    cfg = _cfg_small()
    q, k, v, qs = _inputs(2, 2, 1, 64, 64, 8, dtype=torch.float32)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[0] = 0
    got = superlinear_attention(q * 300, k * 300, v, qs * 300, cfg, attention_mask=mask)
    assert torch.isfinite(got).all()
    assert got[0].abs().max() == 0


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-4), (torch.float16, 1e-4)])
def test_low_precision_inputs(dtype, tol):
    """16-bit inputs are computed in float32 and rounded once at the output: the result is the float64 brute force
    on the same rounded inputs, rounded to the dtype, but for a few last bits (about 3e-7 in bfloat16, 4e-6 in
    float16; arithmetic in the input dtype would be 5e-3 and 6e-4)."""
    cfg = _cfg_small()
    q, k, v, qs = _inputs(1, 4, 2, 120, 120, 16)
    got = superlinear_attention(q.to(dtype), k.to(dtype), v.to(dtype), qs.to(dtype), cfg)
    assert got.dtype == dtype
    want = naive_superlinear_attention(*(x.to(dtype) for x in (q, k, v, qs)), cfg).to(dtype).double()
    err = (got.double() - want).norm() / want.norm()
    assert err < tol


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_gradcheck_all_inputs(search_key):
    cfg = SuperlinearConfig(sw_index=1, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0, search_key=search_key)
    q, k, v, qs = _inputs(1, 2, 1, 24, 24, 4)
    for x in (q, k, v, qs):
        x.requires_grad_(True)

    def fn(q, k, v, qs):
        return superlinear_attention(q, k, v, qs, cfg)

    assert torch.autograd.gradcheck(fn, (q, k, v, qs), eps=1e-6, atol=1e-6)
    fn(q, k, v, qs).square().sum().backward()
    assert qs.grad.abs().max() > 0, "the router must receive gradients through the gate"


GRADIENT_CASES = {  # (batch, heads_q, heads_kv, rows, keys, padded keys of row 1, chunk start or None)
    "2:1": (1, 2, 1, 61, 61, 0, None),
    "16:1 padded": (2, 16, 1, 45, 45, 7, None),
    "chunk padded": (2, 4, 2, 23, 70, 5, 40),
    "decode": (1, 4, 2, 1, 80, 0, 79),
}


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_gradients_match_brute_force_autograd(case, search_key, monkeypatch):
    """The four gradients of the reference, in one block and in many checkpointed ones, against float64 autograd
    through the brute force of docs/semantics.md (`naive_superlinear_attention(differentiable=True)`)."""
    import slkernels.reference as ref

    batch, heads_q, heads_kv, len_q, len_kv, pad, start = GRADIENT_CASES[case]
    cfg = SuperlinearConfig(sw_index=2, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0, search_key=search_key)
    inputs = _inputs(batch, heads_q, heads_kv, len_q, len_kv, 8, gen=torch.Generator().manual_seed(len_kv))
    kwargs = {}
    if start is not None:
        kwargs["cache_position"] = torch.arange(start, start + len_q)
    if pad:
        mask = torch.ones(batch, len_kv, dtype=torch.long)
        mask[1, :pad] = 0
        kwargs["attention_mask"] = mask
    weights = torch.randn(batch, heads_q, len_q, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(fn):
        xs = [x.clone().requires_grad_(True) for x in inputs]
        (fn(*xs) * weights).sum().backward()
        return [x.grad for x in xs]

    want = grads(lambda *xs: naive_superlinear_attention(*xs, cfg, differentiable=True, **kwargs))
    assert want[3].abs().max() > 0  # the router is reached through the gate
    for budget in (1 << 24, 4 * 8 * 100):  # one block, then many checkpointed blocks
        monkeypatch.setattr(ref, "BLOCK_ELEMENTS", budget)
        got = grads(lambda *xs: superlinear_attention(*xs, cfg, backend="reference", **kwargs))
        for name, a, b in zip(("dq", "dk", "dv", "dq_search"), got, want):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=lambda m, name=name: f"{name}: {m}")


def test_every_position_is_reachable():
    """With b_b >= the largest anchor gap, the candidate spans cover [s0, q - W] (random context access)."""
    from slkernels.geometry import anchor_table, span_tables

    cfg = SuperlinearConfig(sw_index=2, num_spans=1, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=0.0)
    w = cfg.window
    assert w == window(cfg)
    tables = span_tables(cfg, 1500)
    for q in range(w + 1, 1500, 13):
        t = q + 1
        anchors = [q + 1 - int(o) for o in anchor_table(cfg, t)]
        assert anchors[0] == q - w and anchors[-1] >= 0
        back = int(tables.back[t])
        assert back == math.ceil(2.0 * math.sqrt(t))
        covered = set()
        for a in anchors:
            covered |= set(range(max(a - back, 0), a + 1))
        assert covered == set(range(0, q - w + 1))


@pytest.mark.parametrize("span_power", [0.2, 0.4, 0.55])
def test_span_tables_round_powers_to_the_nearest_float64(span_power):
    """ceil(b t^rho) from the float64 nearest to t^rho on every machine: numpy's power gives 3125^0.2 = 5.0 where
    the nearest float64 is 5.000000000000001 (as `math.pow` gives it), so the span reached 5 keys back, not 6."""
    from slkernels.geometry import span_reach, span_tables

    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=span_power, backward_factor=1.0,
                            forward_factor=3.0)
    tables = span_tables(cfg, 4096)
    t = torch.arange(4097)
    back = torch.tensor([math.ceil(1.0 * math.pow(x, span_power)) for x in range(4097)])
    fwd = torch.tensor([math.ceil(3.0 * math.pow(x, span_power)) for x in range(4097)])
    assert torch.equal(tables.back[t], back) and torch.equal(tables.fwd[t], fwd)
    assert all(span_reach(cfg, x) == (int(back[x]), int(fwd[x])) for x in (0, 1, 32, 243, 1024, 3125, 4096))
    if span_power == 0.2:
        assert int(tables.back[3125]) == 6 and int(tables.back[32]) == 2 and span_reach(cfg, 3125) == (6, 16)


def test_span_tables_do_not_take_an_ulp_low_power_from_numpy(monkeypatch):
    """Where numpy's power is correctly rounded (as on most machines) the test above cannot tell whether the tables
    correct it. Here numpy's power is made one ulp low everywhere, as some builds give 3125^0.2 = 5.0: the tables
    must still be ceil(b t^rho) of the float64 nearest to t^rho (docs/semantics.md), the same on every machine."""
    import numpy as np
    import slkernels.geometry as geometry

    class UlpLowNumpy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def power(x, y):
            return np.nextafter(np.power(x, y), -np.inf)

    monkeypatch.setattr(geometry, "np", UlpLowNumpy())
    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=0.2, backward_factor=1.0,
                            forward_factor=3.0)
    assert geometry.span_reach(cfg, 3125) == (6, 16)  # 3125^0.2 = 5.000000000000001 in float64
    tables = geometry._span_tables_cpu.__wrapped__(0.2, 1.0, 3.0, 4096)
    assert tables.back.tolist() == [math.ceil(math.pow(x, 0.2)) for x in range(4097)]
    assert tables.fwd.tolist() == [math.ceil(3.0 * math.pow(x, 0.2)) for x in range(4097)]


def test_anchor_offsets_below_2_to_the_64_are_exact_integers():
    """o(i) = i ** (1/p) exactly in integers wherever it is below 2^64; only offsets of 2^64 or more (beyond every
    position) collapse to the one value BEYOND."""
    from slkernels.geometry import BEYOND, anchor_offset

    assert anchor_offset(2, 1 / 63) == 2**63
    assert anchor_offset(3, 1 / 40) == 3**40  # 1.2e19, below 2^64 = 1.8e19
    assert anchor_offset(2, 1 / 64) == BEYOND == 2**64
    assert anchor_offset(3, 1 / 41) == BEYOND


def test_table_capacity_is_the_power_of_two_above_t_and_at_least_64(monkeypatch):
    """Tables are built for capacities 64, 128, 256, ...: the smallest power of two above the largest t asked for,
    never below 64, so short rows share one build."""
    import slkernels.geometry as geometry

    monkeypatch.setattr(geometry, "_TABLES", {})
    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=0.5)
    capacities = [geometry.geometry_tables(cfg, t).capacity for t in (0, 1, 5, 63, 64, 100, 127, 128)]
    assert capacities == [64, 64, 64, 64, 128, 128, 128, 256]
    assert geometry.span_tables(cfg, 5).back.numel() == 65


def test_a_shorter_row_after_a_longer_one_gets_only_its_own_anchor_offsets(monkeypatch):
    """`anchor_table` keeps the view of its latest call: a call for fewer tokens seen after one for more (same
    capacity) must not get the longer view back. With p = 1/2 and sw = 1 the offsets are 4, 9, 16, ..., i^2 <= t."""
    import slkernels.geometry as geometry

    monkeypatch.setattr(geometry, "_TABLES", {})
    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=0.5)
    assert geometry.anchor_table(cfg, 100).tolist() == [i * i for i in range(2, 11)]
    assert geometry.anchor_table(cfg, 70).tolist() == [i * i for i in range(2, 9)]
    assert geometry.anchor_table(cfg, 8).tolist() == [4]
    assert geometry.anchor_table(cfg, 121).tolist() == [i * i for i in range(2, 12)]


def test_span_bounds_of_rows_before_the_first_real_token_reach_as_t_0():
    """Rows in the left padding have t <= 0 tokens seen: their span reach is that of t = 0 (ceil(b * 0) = 0 keys
    each way), never a table entry counted from its far end. W = 3 (sw 1, p 1/2); t = 16: back ceil(2 * 4) = 8,
    forward ceil(1 * 4) = 4, and hi stops at q - W = 17."""
    from slkernels.geometry import span_bounds

    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0)
    anchor, t = torch.tensor([10, 10, 10, 16]), torch.tensor([-2, 0, 16, 16])
    lo, hi = span_bounds(cfg, anchor, t, torch.tensor(0), torch.tensor(20))
    assert lo.tolist() == [10, 10, 2, 8] and hi.tolist() == [10, 10, 14, 17]


def test_a_block_of_rows_counts_every_key_span_and_candidate_against_the_budget(monkeypatch):
    """Per query row a block holds, for each batch row and head, the logits of every key, k spans of
    ceil(b_b t^rho) + ceil(b_f t^rho) + 1 keys and one score per candidate anchor. At t = 100 (sw 1, p = rho = 1/2,
    b_b = 2, b_f = 1): 100 + 2 * (20 + 10 + 1) + 9 anchors (4, 9, ..., 100) = 171 elements, twice for two heads: a
    budget of 19 rows of 342 holds 19 rows, one element less 18."""
    import slkernels.reference as ref
    from slkernels.inputs import check_inputs

    cfg = SuperlinearConfig(sw_index=1, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0)
    q, k = torch.zeros(1, 2, 100, 4), torch.zeros(1, 1, 100, 4)
    inp = check_inputs(q, k, k, q, cfg, None, None, None)
    for budget, rows in ((19 * 342, 19), (19 * 342 - 1, 18), (341, 1), (10**9, 100)):
        monkeypatch.setattr(ref, "BLOCK_ELEMENTS", budget)
        assert ref._block_rows(inp, 100) == rows, budget
