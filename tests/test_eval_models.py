"""Perplexity, span recall and greedy decoding on a tiny converted model and its source."""

from __future__ import annotations

import math

import pytest
import torch
from cli_helpers import tiny_pair

from slconvert.errors import SlconvertError
from slconvert.evaluation.haystack import SyntheticHaystack
from slconvert.evaluation.models import load_eval_model
from slconvert.evaluation.perplexity import document_nll, load_documents, perplexity
from slconvert.evaluation.span_recall import layer_recall, span_recall


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("eval_models"), seed=1)


@pytest.fixture(scope="module")
def models(checkpoints):
    source, converted = checkpoints
    return load_eval_model(converted, device="cpu"), load_eval_model(source, device="cpu")


def _ids(em, chars=700, seed=4):
    return em.tokenizer(SyntheticHaystack(seed).text(chars)[:chars])["input_ids"]


def _full_nll(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum"))


def test_loaded_models(models):
    conv, src = models
    assert conv.converted and not src.converted
    assert conv.max_length == 4096


@pytest.mark.parametrize("which", [0, 1])
def test_chunked_perplexity_equals_one_forward(models, which):
    em = models[which]
    ids = _ids(em)
    assert len(ids) > 150
    reference = _full_nll(em.model, ids)
    for chunk in (37, 128, len(ids)):
        nll, count = document_nll(em.model, ids, chunk)
        assert count == len(ids) - 1
        assert nll == pytest.approx(reference, rel=1e-4), chunk


def test_perplexity_refuses_or_skips_long_documents(models, tmp_path):
    conv, _ = models
    (tmp_path / "short.txt").write_text(SyntheticHaystack(1).text(250)[:250])
    (tmp_path / "long.txt").write_text(SyntheticHaystack(2).text(3000))
    (tmp_path / "docs.jsonl").write_text('{"text": "A small line of text for the model."}\n')
    docs = load_documents(tmp_path)
    assert [name for name, _ in docs] == ["docs.jsonl:1", "long.txt", "short.txt"]
    limited = load_eval_model(conv.path, device="cpu", max_length=200)
    with pytest.raises(SlconvertError, match="long.txt has .* tokens, over the model's 200"):
        perplexity(limited, docs, chunk=64, skip_too_long=False)
    result = perplexity(limited, docs, chunk=64, skip_too_long=True)
    assert [s["document"] for s in result["skipped"]] == ["long.txt"]
    assert len(result["documents"]) == 2 and math.isfinite(result["perplexity"])
    pooled = sum(d["nll"] for d in result["documents"]) / sum(d["scored"] for d in result["documents"])
    assert result["perplexity"] == pytest.approx(math.exp(pooled))


def test_greedy_decoding_with_cache_matches_recomputation(models):
    from slconvert.evaluation.models import greedy_generate

    conv, _ = models
    ids = _ids(conv, 200)
    produced = greedy_generate(conv.model, ids, 4)
    expected, seq = [], list(ids)
    with torch.no_grad():
        for _ in range(4):
            token = int(conv.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            expected.append(token)
            seq.append(token)
    assert produced == expected


def test_chunked_prefill_gives_the_same_last_logits(models):
    from slconvert.evaluation.models import last_logits

    for em in models:
        ids = _ids(em, 400)
        whole, _ = last_logits(em.model, ids, 5)
        with torch.no_grad():
            full = em.model(input_ids=torch.tensor([ids])).logits[0, -5:]
        assert torch.allclose(whole, full, atol=1e-4)
        for chunk in (16, 61):
            chunked, _ = last_logits(em.model, ids, 5, chunk=chunk)
            assert chunked.shape == whole.shape and torch.allclose(chunked, whole, atol=1e-4), chunk


def _brute_recall(call):
    """float64 dense softmax and the Selection's own key mask, averaged over queries beyond the window."""
    from slkernels import select_spans

    q, k, config = call["q"].double(), call["k"].double(), call["config"]
    heads_q, n = q.shape[1], q.shape[2]
    group = heads_q // k.shape[1]
    scale = call["scale"] or q.shape[-1] ** -0.5
    logits = torch.einsum("hqd,hkd->hqk", q[0], k[0].repeat_interleave(group, 0)) * scale
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    probs = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
    inside = select_spans(call["q_search"], call["k"], config).mask(n)[0]
    recall = (probs * inside).sum(-1)  # [H, L]
    beyond = torch.arange(n) + 1 > config.window + 1
    return recall[:, beyond].mean(-1)


def test_span_recall_matches_a_brute_force(models):
    from slconvert.attention import capture_attention

    conv, _ = models
    ids = _ids(conv, 500)
    with capture_attention(conv.model) as calls, torch.no_grad():
        conv.model(input_ids=torch.tensor([ids]))
    assert len(calls) == 2
    for call in calls:
        got = layer_recall(call, block_rows=50)
        assert got["queries_beyond_window"] == len(ids) - 16
        expected = _brute_recall(call)
        assert torch.allclose(torch.tensor(got["recall"], dtype=torch.float64), expected, atol=1e-5)
        assert all(0.0 < r < 1.0 for r in got["recall"])  # random routers miss some dense mass


def test_span_recall_is_one_inside_the_window(models):
    from slconvert.attention import capture_attention

    conv, _ = models
    ids = _ids(conv)[:12]  # shorter than W + 1 = 16: Superlinear attention is dense here
    with capture_attention(conv.model) as calls, torch.no_grad():
        conv.model(input_ids=torch.tensor([ids]))
    result = layer_recall(calls[0])
    assert result["recall"] is None and result["queries_beyond_window"] == 0
    assert result["recall_all"] == pytest.approx([1.0] * len(result["recall_all"]), abs=1e-6)
    with pytest.raises(SlconvertError, match="never leaves the attention window"):
        span_recall(conv, [conv.tokenizer.decode(ids)])


def test_span_recall_needs_a_converted_model(models):
    _, src = models
    with pytest.raises(SlconvertError, match="not a converted checkpoint"):
        span_recall(src, ["some text"])
