"""Router losses against independent per-query computations of docs/semantics.md, and span recall against evaluation's."""

from __future__ import annotations

import math

import pytest
import torch
from slkernels import SuperlinearConfig
from slkernels.naive import dense_causal, naive_superlinear_attention, offset, window

from slconvert.evaluation.span_recall import layer_recall
from slconvert.router import SuperlinearRouter
from slconvert.training.losses import router_losses, sample_rows

CFG = SuperlinearConfig(sw_index=2, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                        forward_factor=1.0)
SPAN_MEAN = SuperlinearConfig(**{**CFG.to_dict(), "search_key": "span_mean"})


def _record(seed: int, mask: bool = False, batch: int = 2, heads_q: int = 4, heads_kv: int = 2, length: int = 40,
            dim: int = 8, cfg: SuperlinearConfig = CFG):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads_q, length, dim, generator=gen) * 1.5
    k = torch.randn(batch, heads_kv, length, dim, generator=gen)
    v = torch.randn(batch, heads_kv, length, dim, generator=gen)
    router = SuperlinearRouter(heads_q, dim, cfg, layer_idx=0)
    with torch.no_grad():
        router.weight.copy_(torch.randn(heads_q, dim, dim, generator=gen) / dim ** 0.5)
    attention_mask = None
    if mask:
        attention_mask = torch.ones(batch, length, dtype=torch.long)
        attention_mask[1, :5] = 0
    record = {"layer_idx": 0, "q": q, "k": k, "v": v, "q_search": router(q).detach(), "config": cfg, "scale": 0.4,
              "attention_mask": attention_mask, "cache_position": torch.arange(length)}
    return record, router


def _all_rows(record):
    return sample_rows(record, 10**6, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cfg", [CFG, SPAN_MEAN], ids=["anchor", "span_mean"])
@pytest.mark.parametrize("mask", [False, True])
def test_recall_matches_the_evaluation(mask, cfg):
    record, router = _record(0, mask, cfg=cfg)
    ours = router_losses(record, router, _all_rows(record), kl=False)["recall"]
    theirs = layer_recall(record)["recall"]
    assert ours == pytest.approx(sum(theirs) / len(theirs), rel=1e-5)


def _first_real(record, b):
    mask = record["attention_mask"]
    return 0 if mask is None else int((mask[b] == 0).sum())


def _brute_kl(record, router):
    """KL(span mass || softmax of router scores) per (b, h, row), looping over queries and candidates."""
    CFG = record["config"]  # noqa: N806 - the configuration under test
    q, k = record["q"].double(), record["k"].double()
    q_search = router(record["q"]).detach().double()
    batch, heads_q, length, _ = q.shape
    group = heads_q // k.shape[1]
    width = window(CFG)
    total, count = 0.0, 0
    for b in range(batch):
        s0 = _first_real(record, b)
        for h in range(heads_q):
            kh = k[b, h // group]
            for pos in range(length):
                t = pos + 1 - s0
                if t <= width + 1:
                    continue
                logits = (kh[s0:pos + 1] @ q[b, h, pos]) * record["scale"]
                probs = torch.zeros(length, dtype=torch.float64)
                probs[s0:pos + 1] = torch.softmax(logits, 0)
                masses, scores = [], []
                i = CFG.sw_index + 1
                while pos + 1 - offset(i, CFG.search_power) >= s0:
                    a = pos + 1 - offset(i, CFG.search_power)
                    lo = max(a - math.ceil(CFG.backward_factor * t ** CFG.span_power), s0)
                    hi = min(a + math.ceil(CFG.forward_factor * t ** CFG.span_power), pos - width)
                    masses.append(float(probs[lo:hi + 1].sum()) if hi >= lo else 0.0)
                    searched = kh[lo:hi + 1].mean(0) if CFG.search_key == "span_mean" else kh[a]
                    scores.append(float(q_search[b, h, pos] @ searched))
                    i += 1
                target = torch.tensor(masses, dtype=torch.float64)
                target = target / target.sum()
                log_router = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), 0)
                kl = float((torch.xlogy(target, target) - target * log_router).sum())
                total += kl
                count += 1
    return total / count


@pytest.mark.parametrize("cfg", [CFG, SPAN_MEAN], ids=["anchor", "span_mean"])
@pytest.mark.parametrize("mask", [False, True])
def test_kl_matches_a_per_query_computation(mask, cfg):
    record, router = _record(1, mask, cfg=cfg)
    result = router_losses(record, router, _all_rows(record), kl=True, recall=False)
    assert float(result["kl"].detach()) == pytest.approx(_brute_kl(record, router), rel=1e-4)
    assert float(result["kl"].detach()) > 0


def test_router_losses_train_only_the_router():
    record, router = _record(2)
    result = router_losses(record, router, _all_rows(record), kl=True, mse=True)
    (result["kl"] + result["mse"]).backward()
    assert router.weight.grad is not None and torch.isfinite(router.weight.grad).all()
    assert router.weight.grad.abs().sum() > 0
    assert not record["q"].requires_grad and not record["k"].requires_grad


@pytest.mark.parametrize("cfg", [CFG, SPAN_MEAN], ids=["anchor", "span_mean"])
def test_mse_matches_the_naive_reference(cfg):
    record, router = _record(3, batch=1, cfg=cfg)
    rows = _all_rows(record)
    result = router_losses(record, router, rows, kl=False, mse=True, recall=False)
    q_search = router(record["q"]).detach()
    index = rows.index.tolist()
    sparse = naive_superlinear_attention(record["q"].double(), record["k"].double(), record["v"].double(), q_search.double(), cfg,
                         scale=record["scale"], rows=index)[:, :, index]
    dense = dense_causal(record["q"].double(), record["k"].double(), record["v"].double(),
                         scale=record["scale"])[:, :, index]
    expected = float(((sparse - dense) ** 2).mean())
    assert float(result["mse"].detach()) == pytest.approx(expected, rel=1e-4)


def test_row_sampling_is_seeded_and_beyond_the_window():
    record, _ = _record(4)
    a = sample_rows(record, 7, torch.Generator().manual_seed(3))
    b = sample_rows(record, 7, torch.Generator().manual_seed(3))
    assert a.index.tolist() == b.index.tolist() and len(a.index) == 7
    assert int(a.positions.min()) + 1 > CFG.window + 1
    short = dict(record, q=record["q"][:, :, :5], k=record["k"][:, :, :5], cache_position=torch.arange(5))
    assert sample_rows(short, 7, torch.Generator()) is None


def test_answer_rows_come_first_then_random_ones():
    """With `prefer` (the rows that predict a labelled token), every eligible preferred row is taken before any
    other; the rest are drawn at random; preferred rows inside the window are not eligible."""
    from slconvert.training.data import IGNORE
    from slconvert.training.losses import answer_rows

    record, _ = _record(4)
    labels = torch.full((3, 40), IGNORE)
    labels[0, [3, 31, 32]] = 5  # row 2 (inside the window), rows 30 and 31
    labels[1, 38] = 7           # row 37
    labels[2] = 9               # a text sample: every token labelled, no answer
    prefer = answer_rows(labels, ["niah", "niah", "text"])
    assert torch.nonzero(prefer).flatten().tolist() == [2, 30, 31, 37]
    assert not answer_rows(labels[2:], ["text"]).any()
    picked = sample_rows(record, 6, torch.Generator().manual_seed(3), prefer)
    index = picked.index.tolist()
    assert len(index) == 6 and {30, 31, 37} <= set(index) and 2 not in index
    assert index == sorted(index) and int(picked.positions.min()) + 1 > CFG.window + 1
    fewer = sample_rows(record, 2, torch.Generator().manual_seed(3), prefer).index.tolist()
    assert len(fewer) == 2 and set(fewer) <= {30, 31, 37}
    # without `prefer`, the same draw as before the option existed
    plain = sample_rows(record, 6, torch.Generator().manual_seed(3)).index.tolist()
    eligible = [r for r in range(40) if r + 1 > CFG.window + 1]
    assert plain == sorted(torch.tensor(eligible)[torch.randperm(len(eligible),
                                                                   generator=torch.Generator().manual_seed(3))[:6]].tolist())


def test_chunked_next_token_loss_matches_plain_cross_entropy(monkeypatch):
    from slconvert.training import losses

    monkeypatch.setattr(losses, "_LOSS_CHUNK", 5)
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 13, 11, generator=gen, requires_grad=True)
    labels = torch.randint(0, 11, (2, 13), generator=gen)
    labels[0, :6] = -100
    ours = losses.next_token_loss(logits, labels)
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert float(ours.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_plain,) = torch.autograd.grad(plain, logits)
    torch.testing.assert_close(grad_ours, grad_plain)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_chunked_distillation_matches_a_per_position_kl(monkeypatch, temperature):
    """KL(teacher || model) at the labelled positions, softened by the temperature and scaled by its square, in
    chunks (one boundary inside the labels): the sums and their gradient equal a per-position computation, the
    teacher gets no gradient, and a model equal to its teacher has none to learn."""
    from slconvert.training import losses

    monkeypatch.setattr(losses, "_LOSS_CHUNK", 5)
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 13, 11, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 13, 11, generator=gen, requires_grad=True)
    labels = torch.randint(0, 11, (2, 13), generator=gen)
    labels[0, :6] = -100
    sums, counts = losses.distill_sums(logits, teacher, labels, temperature)
    assert counts.tolist() == [7, 12]
    expected = torch.zeros(2)
    for b in range(2):
        for i in range(12):
            if labels[b, i + 1] != -100:
                p = torch.softmax(teacher[b, i] / temperature, -1)
                expected[b] += (p * (p.log() - torch.log_softmax(logits[b, i] / temperature, -1))).sum() * temperature ** 2
    torch.testing.assert_close(sums, expected)
    grad, teacher_grad = torch.autograd.grad(sums.sum(), [logits, teacher], allow_unused=True)
    torch.testing.assert_close(grad, torch.autograd.grad(expected.sum(), logits)[0])
    assert teacher_grad is None
    same, _ = losses.distill_sums(teacher.detach(), teacher.detach(), labels, temperature)
    assert same.abs().max() < 1e-5


def test_loss_averages_over_tokens_or_over_samples():
    from slconvert.training import losses

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 9, 7, generator=gen)
    labels = torch.randint(0, 7, (3, 9), generator=gen)
    labels[0, :7] = -100  # a needle sample: two labelled tokens (positions 7, 8)
    labels[2] = -100  # nothing labelled: counts for neither average
    sums, counts = losses.next_token_sums(logits, labels)
    assert counts.tolist() == [2, 8, 0]
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                                  ignore_index=-100, reduction="none").view(3, 8)
    torch.testing.assert_close(sums, per_token.sum(1))
    token = losses.average_loss(sums, counts, "token")
    sample = losses.average_loss(sums, counts, "sample")
    assert float(token) == pytest.approx(float(per_token.sum() / 10))
    assert float(sample) == pytest.approx(float((per_token[0].sum() / 2 + per_token[1].sum() / 8) / 2))
    assert float(token) != pytest.approx(float(sample))


def test_loss_by_kind_sums_each_kind_over_micro_batches():
    """The per-kind losses are token means over the step, whatever the split into micro-batches."""
    from slconvert.training.loop import _finish_loss_by_kind, _loss_by_kind

    first = _loss_by_kind(torch.tensor([2.0, 8.0]), torch.tensor([2, 8]), ["niah", "text"])
    second = _loss_by_kind(torch.tensor([3.0]), torch.tensor([1]), ["niah"])
    step = {key: (first[key] + second[key]) / 2 for key in first}  # the loop averages over micro-batches
    assert _finish_loss_by_kind(step) == pytest.approx({"lm_niah": 5.0 / 3.0, "lm_text": 1.0})
    assert _finish_loss_by_kind(dict(second)) == {"lm_niah": 3.0}  # no text sample: no lm_text
    # under bf16 autocast (a GPU run's default) the sums and counts stay exact float32
    big = torch.tensor([1237.78, 87654.25]), torch.tensor([38193, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logs = _loss_by_kind(*big, ["niah", "text"])
    assert logs["_lm_niah_sum"] == pytest.approx(1237.78, rel=1e-6) and logs["_lm_niah_count"] == 38193
