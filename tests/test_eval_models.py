"""Perplexity, span recall and greedy decoding on a tiny converted model and its source."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import tiny_pair
from slkernels.naive import choose_spans, first_real, window

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


class _Uniform(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over 16 tokens at every position."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 16), past_key_values=None)


def test_perplexity_and_bits_per_byte_of_a_uniform_model():
    """Known answers: over 16 equally likely tokens every scored token costs ln 16, so each document's perplexity
    is 16 (the mean over its scored tokens, all but the first), and bits per byte is 4 bits times the scored tokens
    over the document's bytes: 4 * 4 / 5 for a 5-byte document of 5 tokens, 4 * 9 / 10 for one of 10."""
    def tokenizer(text, add_special_tokens=True):
        return {"input_ids": [byte % 16 for byte in text.encode()]}

    em = SimpleNamespace(tokenizer=tokenizer, model=_Uniform(), max_length=None, name="uniform")
    result = perplexity(em, [("a", "ab cd"), ("b", "0123456789")], chunk=3, skip_too_long=False)
    rows = result["documents"]
    assert [r["scored"] for r in rows] == [4, 9] and result["tokens"] == 13
    assert [r["perplexity"] for r in rows] == pytest.approx([16.0, 16.0])
    assert [r["bits_per_byte"] for r in rows] == pytest.approx([16 / 5, 36 / 10])
    assert result["perplexity"] == pytest.approx(16.0)


def _byte_tokens(text, add_special_tokens=True):
    """One token per UTF-8 byte (its value mod 16), after a BOS token 0 when special tokens are asked for."""
    return {"input_ids": ([0] if add_special_tokens else []) + [byte % 16 for byte in text.encode()]}


def test_perplexity_edges_of_the_context_and_of_a_document():
    """Known answers with the uniform model (every scored token costs ln 16): a document of exactly max_length
    tokens is scored (only a longer one is too long); a document of one token (BOS alone) has nothing to score and
    is skipped; the BOS token is part of the document, so "ab cd" (BOS + 5 bytes) scores 5 tokens; bits per byte
    counts UTF-8 bytes, not characters: "\u00e9\u00e9" is 4 bytes (BOS + 4 tokens, 4 scored), 4 * 4 / 4 = 4.0 bits
    per byte (8.0 if the 2 characters were counted)."""
    em = SimpleNamespace(tokenizer=_byte_tokens, model=_Uniform(), max_length=6, name="uniform")
    docs = [("exact", "ab cd"), ("long", "ab cde"), ("empty", ""), ("accents", "\u00e9\u00e9")]
    result = perplexity(em, docs, chunk=2, skip_too_long=True)
    assert [(r["document"], r["tokens"], r["scored"]) for r in result["documents"]] == [("exact", 6, 5),
                                                                                        ("accents", 5, 4)]
    assert [r["bits_per_byte"] for r in result["documents"]] == pytest.approx([4 * 5 / 5, 4.0])
    assert result["skipped"] == [{"document": "long", "tokens": 7, "max_length": 6},
                                 {"document": "empty", "tokens": 1, "reason": "fewer than 2 tokens"}]
    assert result["tokens"] == 9 and result["perplexity"] == pytest.approx(16.0)


def test_perplexity_of_nothing_scored_is_none_and_a_chunk_below_one_is_refused():
    """When every document is skipped no token is scored: the pooled perplexity is None (not 0 or NaN). A chunk
    size of 0 is the one-line error, not a crash inside range()."""
    em = SimpleNamespace(tokenizer=_byte_tokens, model=_Uniform(), max_length=2, name="uniform")
    result = perplexity(em, [("long", "abc")], chunk=4, skip_too_long=True)
    assert result["tokens"] == 0 and result["perplexity"] is None and result["documents"] == []
    with pytest.raises(SlconvertError, match="--chunk-size 0 must be at least 1"):
        document_nll(_Uniform(), [1, 2, 3], 0)


def test_documents_skip_blank_lines_and_texts_and_a_named_file_is_read_whatever_its_suffix(tmp_path):
    """A blank (or whitespace-only) .jsonl line is skipped but still counted in the line numbers; a document of
    whitespace alone is dropped; a file named directly is read even with a suffix a folder search would skip."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jsonl").write_text('{"text": "one"}\n   \n{"text": " "}\n{"text": "four"}\n')
    (tmp_path / "docs" / "b.txt").write_text("  \n\t")
    (tmp_path / "docs" / "c.log").write_text("not a document")
    assert load_documents(tmp_path / "docs") == [("a.jsonl:1", "one"), ("a.jsonl:4", "four")]
    assert load_documents(tmp_path / "docs" / "c.log") == [("c.log", "not a document")]


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


def test_a_batch_of_prompts_decodes_as_each_prompt_alone(models):
    """Prompts of one length decoded side by side, each with its own budget, give each prompt's own greedy tokens;
    prompts of different lengths are refused."""
    from slconvert.evaluation.models import greedy_generate

    for em in models:
        prompts = [_ids(em, 700, seed)[:150] for seed in (4, 5, 6)]
        budgets = [5, 2, 0]
        together = greedy_generate(em.model, prompts, budgets, prefill_chunk=64)
        alone = [greedy_generate(em.model, ids, budget) for ids, budget in zip(prompts, budgets)]
        assert together == alone and [len(t) for t in together] == budgets
        with pytest.raises(ValueError, match="one length"):
            greedy_generate(em.model, [prompts[0], prompts[1][:-1]], 2)


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


def _spec_recall(call):
    """Span recall from docs/semantics.md alone: for every real query, the dense float64 softmax over its keys
    summed over the window and the spans a brute-force search picks (`slkernels.naive.choose_spans`: every anchor
    of the grid scored, top k); per head, averaged over the queries beyond the window and over all real queries."""
    q, k, q_search = (call[name].detach().double().cpu() for name in ("q", "k", "q_search"))
    cfg, mask, cache_position = call["config"], call.get("attention_mask"), call.get("cache_position")
    batch, heads_q, len_q, dim = q.shape
    len_kv = k.shape[2]
    group = heads_q // k.shape[1]
    scale = call.get("scale") or dim ** -0.5
    positions = list(range(len_kv - len_q, len_kv)) if cache_position is None else [int(x) for x in cache_position]
    beyond_sum = torch.zeros(heads_q, dtype=torch.float64)
    all_sum = torch.zeros(heads_q, dtype=torch.float64)
    n_beyond = n_real = 0
    for b in range(batch):
        s0 = first_real(mask, b, len_kv)
        for r, pos in enumerate(positions):
            t = pos + 1 - s0
            if t < 1:  # a padding row reads nothing
                continue
            n_real += 1
            n_beyond += t > window(cfg) + 1
            keys = torch.arange(s0, pos + 1)
            for h in range(heads_q):
                kh = h // group
                win, chosen = choose_spans(k[b, kh], q_search[b, h, r], cfg, pos, s0)
                read = set(win).union(*(span for _, _, span in chosen))
                assert read <= set(keys.tolist())
                probs = torch.softmax(scale * (k[b, kh, keys] @ q[b, h, r]), dim=0)
                recall = probs[torch.tensor([key in read for key in keys.tolist()])].sum()
                all_sum[h] += recall
                if t > window(cfg) + 1:
                    beyond_sum[h] += recall
    return {"queries_beyond_window": n_beyond, "recall": beyond_sum / max(n_beyond, 1), "recall_all": all_sum / n_real}


def _assert_recall_matches(got, expected):
    assert got["queries_beyond_window"] == expected["queries_beyond_window"]
    assert torch.allclose(torch.tensor(got["recall"], dtype=torch.float64), expected["recall"], atol=1e-5)
    assert torch.allclose(torch.tensor(got["recall_all"], dtype=torch.float64), expected["recall_all"], atol=1e-5)


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
        _assert_recall_matches(got, _spec_recall(call))
        assert all(0.0 < r < 1.0 for r in got["recall"])  # random routers miss some dense mass


def test_span_recall_pools_the_query_rows_of_all_texts(models):
    """Over several texts each figure is pooled over their query rows (a longer text weighs more), `recall` over the
    rows past the window and `recall_all` over every real row, from each text's own layer recall."""
    from slconvert.attention import capture_attention

    conv, _ = models
    texts = [_ids(conv, 200, seed=1), _ids(conv, 600, seed=2)]
    per_text = []
    for ids in texts:
        with capture_attention(conv.model) as calls, torch.no_grad():
            conv.model(input_ids=torch.tensor([ids]))
        per_text.append([layer_recall(call) for call in calls])
    got = span_recall(conv, [conv.tokenizer.decode(ids) for ids in texts], ids=texts)
    for index, layer in enumerate(got["layers"]):
        parts = [results[index] for results in per_text]
        beyond, rows = (sum(p[key] for p in parts) for key in ("queries_beyond_window", "queries"))
        assert layer["queries_beyond_window"] == beyond and rows == sum(len(ids) for ids in texts)
        for h in range(len(layer["recall"])):
            assert layer["recall"][h] == pytest.approx(
                sum(p["recall"][h] * p["queries_beyond_window"] for p in parts) / beyond, rel=1e-6)
            assert layer["recall_all"][h] == pytest.approx(sum(p["recall_all"][h] * p["queries"] for p in parts) / rows,
                                                           rel=1e-6)


# (config, batch, H_q, H_kv, L_q, L_kv, D, left padding of the last batch row, block_rows)
RECALL_CASES = {
    "anchor_odd": (dict(sw_index=3, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                        forward_factor=0.0), 1, 2, 2, 37, 37, 8, 0, 128),
    "anchor_gqa_padding": (dict(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=1.0,
                                forward_factor=1.0), 2, 4, 2, 45, 45, 8, 7, 16),
    "anchor_fractional_power": (dict(sw_index=2, num_spans=1, search_power=0.6, span_power=0.45,
                                     backward_factor=1.5, forward_factor=0.5), 2, 3, 1, 53, 53, 16, 12, 10),
    "anchor_chunk": (dict(sw_index=2, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                          forward_factor=1.0), 2, 2, 1, 19, 61, 8, 9, 8),
    "span_mean_odd_padding": (dict(sw_index=2, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                                   forward_factor=1.0, search_key="span_mean"), 2, 4, 2, 41, 41, 8, 5, 9),
    "span_mean_fractional_power": (dict(sw_index=3, num_spans=3, search_power=0.55, span_power=0.55,
                                        backward_factor=3.0, forward_factor=1.0, search_key="span_mean"),
                                   2, 2, 2, 67, 67, 16, 14, 32),
}


@pytest.mark.parametrize("name", list(RECALL_CASES))
def test_span_recall_matches_the_semantics_on_random_inputs(name):
    """layer_recall on random q, k, q_search against the brute force of the semantics: odd lengths, GQA,
    left padding, a prefill chunk at later positions, both search keys, blocks of rows that do not divide L_q."""
    from slkernels import SuperlinearConfig

    cfg_kw, batch, heads_q, heads_kv, len_q, len_kv, dim, pad, block_rows = RECALL_CASES[name]
    cfg = SuperlinearConfig(**cfg_kw)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    q, q_search = (torch.randn(batch, heads_q, len_q, dim, generator=gen) for _ in range(2))
    k = torch.randn(batch, heads_kv, len_kv, dim, generator=gen)
    mask = torch.ones(batch, len_kv, dtype=torch.long)
    mask[-1, :pad] = 0
    call = {"layer_idx": 0, "q": q, "k": k, "q_search": q_search, "config": cfg, "scale": None,
            "attention_mask": mask if pad else None,
            "cache_position": torch.arange(len_kv - len_q, len_kv) if len_q < len_kv else None}
    got = layer_recall(call, block_rows=block_rows)
    expected = _spec_recall(call)
    assert expected["queries_beyond_window"] > 0
    _assert_recall_matches(got, expected)
    assert all(0.0 < r < 1.0 for r in got["recall"])


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


def test_config_context_length_known_answers():
    """A multimodal config's text_config is read first; a bool is no length; a length of 0 is refused in one line."""
    from slconvert.evaluation.models import config_max_length

    assert config_max_length({"text_config": {"max_position_embeddings": 8192}, "max_position_embeddings": 4096}) == 8192
    assert config_max_length({"max_position_embeddings": True, "n_positions": 2048}) == 2048
    assert config_max_length({"hidden_size": 64}) is None
    with pytest.raises(SlconvertError, match="not a context length"):
        config_max_length({"max_position_embeddings": 0})


@pytest.mark.parametrize("max_length", [0, -5])
def test_a_context_limit_below_one_token_is_refused_after_loading(max_length):
    from slconvert.assets import TINY_TEACHER

    with pytest.raises(SlconvertError, match=rf"^max length {max_length} must be a positive number of tokens$"):
        load_eval_model(TINY_TEACHER, device="cpu", max_length=max_length)
    assert load_eval_model(TINY_TEACHER, device="cpu", max_length=1).max_length == 1
