"""slkernels.naive: docs/semantics.md written out per query in float64, as plainly as possible, to judge every
implementation (the package's naive reference, beside the vectorized `reference` backend and the Triton kernels).

`naive_superlinear_attention` is the one public function of the operation; `choose_spans` is the search rule of one
query, `dense_causal` plain causal attention (what Superlinear attention equals while t <= W + 1). Loops over batch
rows, heads and queries: for checking small shapes, never for use at length.

Deliberately shares no code with the rest of `slkernels`: its own offsets, window, spans and softmaxes, so that a
mistake in a shared helper cannot hide in both the implementation and its judge.
"""

from __future__ import annotations

import math

import torch

__all__ = ["naive_superlinear_attention", "choose_spans", "dense_causal", "first_real", "window", "offset"]


def offset(i: int, power: float) -> int:
    inverse = 1.0 / power
    if abs(inverse - round(inverse)) < 1e-9:
        return i ** round(inverse)
    return math.floor(i ** inverse)


def window(cfg) -> int:
    return offset(cfg.sw_index + 1, cfg.search_power) - 1


def _softmax_attend(qv, keys, values, scale):
    """softmax(scale * keys @ qv) @ values over an explicit list of rows."""
    weights = torch.softmax(scale * (keys @ qv), dim=0)
    return weights @ values


def choose_spans(k_head, qs_row, cfg, pos, s0):
    """The keys one query at `pos` reads (first real key `s0`, at least one token seen), by the search rule.

    k_head: float64 [L_kv, D] keys of the query's kv head; qs_row: float64 [D] its search query.
    Returns (window keys, [(unscaled score, anchor, span keys), ...] of the chosen spans, best first); each score a
    0-dim tensor, part of the inputs' autograd graph where they have one.
    """
    width = window(cfg)
    t = pos + 1 - s0
    win = list(range(max(pos - width + 1, s0), pos + 1))
    candidates = []
    i = cfg.sw_index + 1
    while pos + 1 - offset(i, cfg.search_power) >= s0:
        candidates.append(pos + 1 - offset(i, cfg.search_power))
        i += 1
    if not candidates:
        return win, []
    grow = math.pow(t, cfg.span_power)
    back = math.ceil(cfg.backward_factor * grow)
    fwd = math.ceil(cfg.forward_factor * grow)

    def span_of(a):
        return list(range(max(a - back, s0), min(a + fwd, pos - width) + 1))

    if cfg.search_key == "span_mean":  # the mean key of the span each anchor would open
        keys_searched = torch.stack([k_head[span_of(a)].mean(dim=0) for a in candidates])
    else:  # the anchor token's own key
        keys_searched = k_head[candidates]
    raw = keys_searched @ qs_row  # unscaled search scores
    order = sorted(zip(raw.tolist(), candidates, range(len(candidates))), reverse=True)  # ties: the nearer anchor
    return win, [(raw[n], a, span_of(a)) for _, a, n in order[: cfg.num_spans]]


def first_real(attention_mask, b, len_kv):
    """s0 of batch row b: its first real key (0 without a mask)."""
    if attention_mask is None:
        return 0
    real = [int(x) for x in attention_mask[b]]
    return real.index(1) if 1 in real else len_kv


def naive_superlinear_attention(q, k, v, q_search, cfg, cache_position=None, attention_mask=None, scale=None, rows=None,
                                differentiable=False):
    """Rows `rows` (default all) of Superlinear attention, float64, zeros elsewhere.

    differentiable: keep the inputs' autograd graph (float64 gradients of every input through this loop, the
    judge of every backward); else the inputs are detached."""
    q, k, v, q_search = (x.double().cpu() for x in (q, k, v, q_search))
    if not differentiable:
        q, k, v, q_search = (x.detach() for x in (q, k, v, q_search))
    batch, heads_q, len_q, dim = q.shape
    heads_kv, len_kv = k.shape[1], k.shape[2]
    group = heads_q // heads_kv
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    positions = list(range(len_kv - len_q, len_kv)) if cache_position is None else [int(x) for x in cache_position]
    out = torch.zeros(batch, heads_q, len_q, v.shape[-1], dtype=torch.float64)
    rows = range(len_q) if rows is None else rows
    for b in range(batch):
        s0 = first_real(attention_mask, b, len_kv)
        for h in range(heads_q):
            kh = h // group
            for r in rows:
                pos = positions[r]
                if pos + 1 - s0 < 1:
                    continue
                win, chosen = choose_spans(k[b, kh], q_search[b, h, r], cfg, pos, s0)
                qv = q[b, h, r]
                if not chosen:
                    out[b, h, r] = _softmax_attend(qv, k[b, kh, win], v[b, kh, win], scale)
                    continue
                gate = torch.softmax(torch.stack([s for s, _, _ in chosen]), dim=0)
                for g, (_, _, span) in zip(gate, chosen):
                    keys = span + win
                    assert not set(span) & set(win)
                    out[b, h, r] += g * _softmax_attend(qv, k[b, kh, keys], v[b, kh, keys], scale)
    return out


def dense_causal(q, k, v, cache_position=None, scale=None):
    """Plain causal softmax attention in float64 (GQA by repetition), for the t <= W+1 property."""
    q, k, v = (x.detach().double().cpu() for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    len_q, len_kv = q.shape[2], k.shape[2]
    positions = torch.arange(len_kv - len_q, len_kv) if cache_position is None else torch.as_tensor(cache_position)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    allowed = torch.arange(len_kv)[None, :] <= positions[:, None]
    logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", torch.softmax(logits, -1), v)
