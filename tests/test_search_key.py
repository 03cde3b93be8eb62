"""The "span_mean" search key: reference and `select_spans` against the brute force of docs/semantics.md.

The brute force computes each candidate's span and averages its keys one by one; the reference uses running
sums of K. They must agree on every row (odd lengths, GQA up to 16:1, left padding, chunked prefill, decode),
and gradients must reach q_search and every key of a selected span, not only the anchor's.
"""

from __future__ import annotations

import pytest
import torch
from slkernels import SuperlinearConfig, SuperlinearConfigError, select_spans, superlinear_attention
from slkernels.naive import naive_superlinear_attention
from test_reference import _inputs


def _cfg(**overrides):
    base = dict(sw_index=2, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                forward_factor=1.0, search_key="span_mean")
    return SuperlinearConfig(**{**base, **overrides})


@pytest.mark.parametrize("length,gqa,power,fwd,num", [
    (1, (4, 2), 0.5, 1.0, 2), (57, (1, 1), 0.5, 0.0, 1), (129, (4, 2), 0.55, 1.0, 3),
    (211, (16, 1), 0.5, 1.0, 2), (300, (4, 2), 1 / 3, 0.0, 4),
])
def test_reference_matches_brute_force(length, gqa, power, fwd, num):
    cfg = _cfg(search_power=power, span_power=power, forward_factor=fwd, num_spans=num)
    heads_q, heads_kv = gqa
    gen = torch.Generator().manual_seed(length)
    q, k, v, qs = _inputs(1 if heads_q == 16 else 2, heads_q, heads_kv, length, length, 8, gen=gen)
    got = superlinear_attention(q, k, v, qs, cfg, backend="reference")
    want = naive_superlinear_attention(q, k, v, qs, cfg)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)


def test_span_mean_selects_differently_from_anchor():
    """The two keys are different rules: on random data they must pick different spans somewhere."""
    q, k, v, qs = _inputs(1, 4, 2, 200, 200, 8)
    anchor = select_spans(qs, k, _cfg(search_key="anchor"))
    mean = select_spans(qs, k, _cfg())
    assert not torch.equal(anchor.anchor, mean.anchor)
    out_anchor = superlinear_attention(q, k, v, qs, _cfg(search_key="anchor"))
    out_mean = superlinear_attention(q, k, v, qs, _cfg())
    assert (out_anchor - out_mean).abs().max() > 1e-3


def test_left_padding_chunks_and_decode():
    cfg = _cfg()
    length, pad = 160, 23
    q, k, v, qs = _inputs(2, 4, 2, length, length, 8)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :pad] = 0
    k[1, :, :pad] *= 1e4  # padding keys must never enter a span mean
    full = superlinear_attention(q, k, v, qs, cfg, attention_mask=mask)
    assert torch.isfinite(full).all() and full[1, :, :pad].abs().max() == 0
    want = naive_superlinear_attention(q, k, v, qs, cfg, attention_mask=mask, rows=range(0, length, 5))
    torch.testing.assert_close(full[:, :, ::5], want[:, :, ::5], atol=1e-10, rtol=1e-9)
    chunk = slice(90, 131)
    got = superlinear_attention(q[:, :, chunk], k[:, :, :131], v[:, :, :131], qs[:, :, chunk], cfg,
                                attention_mask=mask[:, :131])
    torch.testing.assert_close(got, full[:, :, chunk], atol=1e-12, rtol=1e-10)
    decode = superlinear_attention(q[:, :, -1:], k, v, qs[:, :, -1:], cfg, attention_mask=mask)
    torch.testing.assert_close(decode, full[:, :, -1:], atol=1e-12, rtol=1e-10)


def test_select_spans_matches_brute_force_choice():
    """`select_spans` picks the candidates with the highest span-mean scores (checked one row at a time)."""
    cfg = _cfg(num_spans=1, forward_factor=0.0)
    q, k, v, qs = _inputs(1, 2, 1, 120, 120, 8)
    sel = select_spans(qs, k, cfg)
    w = cfg.window
    for row in (w + 2, 60, 119):
        t = row + 1
        back = int(torch.tensor(2.0 * t ** 0.5).ceil())
        best = max(
            (float(qs[0, 0, row].double() @ k[0, 0, max(a - back, 0):a + 1].double().mean(0)), a)
            for a in [row + 1 - i * i for i in range(cfg.sw_index + 1, 12) if row + 1 - i * i >= 0]
        )[1]
        assert int(sel.anchor[0, 0, row, 0]) == best


def test_gradients_reach_every_key_of_a_span():
    cfg = _cfg(sw_index=1, num_spans=2)
    q, k, v, qs = _inputs(1, 2, 1, 24, 24, 4)  # gradcheck of every input: test_reference.py
    qs.requires_grad_(True)
    # The last row's output through q_search (the gate). Its gradient on k covers whole spans.
    k2 = k.detach().clone().requires_grad_(True)
    out = superlinear_attention(q, k2, v, qs, cfg)
    (gate_grad,) = torch.autograd.grad(out[0, 0, -1].sum(), qs, retain_graph=True)
    assert gate_grad.abs().max() > 0
    sel = select_spans(qs.detach(), k.detach(), cfg)
    lo, hi = int(sel.span_lo[0, 0, -1, 0]), int(sel.span_hi[0, 0, -1, 0])
    assert hi > lo  # a span of several keys
    (kgrad,) = torch.autograd.grad(out[0, 0, -1].sum(), k2)
    assert (kgrad[0, 0, lo:hi + 1].abs().sum(-1) > 0).all()


def test_config_round_trip_and_validation():
    cfg = _cfg()
    assert cfg.to_dict()["search_key"] == "span_mean"
    assert SuperlinearConfig.from_dict(cfg.to_dict()) == cfg
    assert SuperlinearConfig.from_dict({"sw_index": 3}).search_key == "anchor"  # older checkpoints
    with pytest.raises(SuperlinearConfigError, match="search_key"):
        SuperlinearConfig(search_key="pooled")


def test_kernel_backend_serves_both_search_keys(monkeypatch):
    """The Triton kernels implement both keys: a call they can run is theirs with either search key (here the CPU is
    made to count as interpreting, as TRITON_INTERPRET=1 would; tests/test_triton_interpret.py runs span_mean on
    them), and without the interpreter neither is."""
    from slkernels import triton_backend
    from slkernels.api import resolve_backend
    from slkernels.inputs import check_inputs

    q, k, v, qs = _inputs(1, 2, 1, 16, 16, 16, dtype=torch.float32)
    calls = [check_inputs(q, k, v, qs, _cfg(search_key=key), None, None, None) for key in ("span_mean", "anchor")]
    monkeypatch.setattr(triton_backend, "interpreting", lambda: False)
    assert [resolve_backend(c, "auto") for c in calls] == ["reference", "reference"]
    monkeypatch.setattr(triton_backend, "interpreting", lambda: True)
    assert [resolve_backend(c, "auto") for c in calls] == ["triton", "triton"]


def test_kernel_backend_leaves_a_value_head_dim_other_than_the_querys_to_the_reference(monkeypatch):
    """The kernels take one head dim for q, k and v: a call whose v has another (which the reference serves) is not
    theirs even where they could run (the CPU made to count as interpreting), so `auto` gives it to the reference."""
    from slkernels import triton_backend
    from slkernels.api import resolve_backend
    from slkernels.inputs import check_inputs

    q, k, v, qs = _inputs(1, 2, 1, 16, 16, 16, dtype=torch.float32)
    monkeypatch.setattr(triton_backend, "interpreting", lambda: True)
    same = check_inputs(q, k, v, qs, _cfg(), None, None, None)
    wider = check_inputs(q, k, torch.cat([v, v], dim=-1), qs, _cfg(), None, None, None)
    assert triton_backend.supports(same) and not triton_backend.supports(wider)
    assert resolve_backend(wider, "auto") == "reference"


def test_convert_option_round_trips_through_the_checkpoint(tmp_path):
    """`slconvert convert --search-key span_mean` is written to config.json and `slconvert.load` runs it."""
    import json

    from cli_helpers import convert_cli

    import slconvert
    from slconvert.tiny import build_tiny_model

    source = build_tiny_model("nemotron_h", tmp_path / "source")
    out = convert_cli(source, tmp_path / "converted", "--search-key", "span_mean")
    block = json.loads((out / "config.json").read_text())["superlinear"]
    assert block["params"]["search_key"] == "span_mean"
    model = slconvert.load(out)
    assert {r.config.search_key for r in slconvert.router.routers(model).values()} == {"span_mean"}
    ids = torch.randint(4, 300, (1, 90), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean_logits = model(input_ids=ids).logits
        anchor = slconvert.load(convert_cli(source, tmp_path / "anchor"))
        anchor_logits = anchor(input_ids=ids).logits
    assert torch.isfinite(mean_logits).all()
    assert (mean_logits - anchor_logits).abs().max() > 1e-4  # the key changes which spans are read
