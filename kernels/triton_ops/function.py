"""Prefill / training path: the passes of the Triton backend tied into one autograd.Function.

Forward: search (top-k anchors) -> span entries (o_s, lse_s of each span) -> window entries (o_w, lse_w,
and the output: each span joined with the window through the log-sum-exps, mixed by the gate). Backward,
with g the gate, lse_j the joint log-sum-exp of span j with the window and dg_j = dOut . O_j:

- span j is a flash-attention backward with lse_j, output gradient g_j dOut and delta g_j dg_j;
- the window, shared by the k joint softmaxes, is one flash-attention backward with
  ``lse_eff = -log sum_j g_j exp(-lse_j)`` and ``delta_eff = sum_j softmax_j(log g_j - lse_j) dg_j``;
- the gate: ``ds_j = g_j (dg_j - sum_i g_i dg_i)`` flows into q_search and the searched keys: k[a_j], or with
  the "span_mean" search key every key of span j (`attend_bwd.gate_backward`).

``dOut . O_j = (1 - w_j) dOut . o_w + w_j dOut . o_s_j`` needs ``dOut . o_s_j``. With `SAVE_SPAN_OUTPUTS` the
forward keeps its span outputs o_s (k outputs' worth, in the query's dtype) until the backward's first launch reads
them, so dg is known before any walk and the span dq (DQ) takes three tensor-core products a key block. Without
them, the span dq pass sums ``w_j dOut . o_s_j = sum p dp`` over the span's keys in the same walk (DQ_SPAN) and
subtracts its share from dq at the end (a fourth product, ``sum p k``). The window dq and every dk/dv then run with
the finished dg. (`fuse_span_dq=False` keeps the older order without saved outputs, a DELTA walk then a DQ walk, for
comparisons.) The per-row math between the passes (dg, the gate's and the window's values) is two launches of
`mix_bwd`.
"""

from __future__ import annotations

import torch

from ..config import SuperlinearConfig
from . import mix_bwd
from .attend import (
    MODE_DELTA,
    MODE_DQ,
    MODE_DQ_SPAN,
    MODE_FWD_SPAN,
    MODE_FWD_WINDOW,
    at_query_offsets,
    run_entries,
    uses_descriptors,
)
from .attend_bwd import dkdv, gate_backward
from .common import capability, cdiv, interpreting
from .entries import max_span_length
from .prefix import KeySums, key_prefix
from .search import search_topk
from .span_lists import span_lists
from .window_lists import window_lists

__all__ = ["superlinear_prefill", "forward_pass", "inference_forward", "inference_plan", "inference_chunk_rows",
           "ws_span_pass", "ws_key_pass"]

# Inference (no gradients) runs the query rows in chunks, so that what the pass holds per query row besides the
# output (the k per-span partial outputs in q's dtype and about half an output's worth of anchors, scores, gates
# and work lists: k + 0.5 outputs) exists for one chunk at a time; the window pass writes each chunk's rows straight
# into the output. The whole pass held 4.5x dense SDPA's peak at 256K; in chunks the peak is about the output plus
# at most INFERENCE_EXTRA of it, counting what the call holds for all its chunks (the span-mean running sums of K:
# 3/16 of an output at 32 / 2 heads). Measured on an H200 at 256K (bf16, 32 / 2 heads, released, anchor key):
# 13 chunks with a copy of each chunk's output (k + 1.5 counted) 2.70 GiB, 13 without it 2.54 GiB, against dense
# SDPA's 2.00 and the one pass's 8.93 (benchmarks/NOTES.md item 45). A chunk holds at least
# INFERENCE_MIN_ROWS rows over the batch, in a multiple of CHUNK_ALIGN rows per sequence (so the search, gates and
# window tiles are the whole pass's row for row; span tiles group a chunk's own entries, so a span's keys may be
# summed in other blocks: equal up to rounding), so that a chunk's launches stay a small part of its time. Calls
# of fewer than INFERENCE_START_ROWS rows over the batch (a model's 32K prefill chunks at batch 1, whose extras are
# small in bytes) stay one pass. INFERENCE_EXTRA = 0 switches the chunking off.
INFERENCE_EXTRA = 0.4
INFERENCE_MIN_ROWS = 16384
INFERENCE_START_ROWS = 65536
CHUNK_ALIGN = 4096

# The span pass by the warp-specialised Gluon kernel (`attend_ws`: a loader warp and two consumer warp groups per
# program) where the call's longest span holds at least this many keys, on Hopper with 16-bit contiguous K and V
# and head dim 128; 0 keeps the `tl` kernel everywhere. Measured on an H200 (32 / 2 heads, bf16,
# benchmarks/results/ws-forward-h200-2026-12-03/), span pass against the `tl` kernel's: 71.2 against 75.8-77.0 ms
# at 256K released (spans of 3824 keys), equal at 128K (2612), slower at 64K (1785: 10.5 against 9.6-9.8) and at
# balanced 256K (1025: 33.9 against 28.9-29.1).
WS_SPAN_MIN_KEYS = 3072

# dk/dv of both entry lists by the warp-specialised Gluon kernel (`attend_bwd_ws`: a loader warp group and two
# consumer warp groups per program, scores computed key-major) on Hopper with 16-bit contiguous K and V and head
# dim 128; False keeps the `tl` kernel. Measured on an H200 (32 / 2 heads, bf16,
# benchmarks/results/ws-dkdv-h200-2026-12-03/), against the `tl` kernel in the same run: the spans' dk/dv 145.0
# against 215.2-215.3 ms at 256K released (window 37.3 against 52.8-54.0), 19.2 against 25.2-26.0 at 64K released,
# 48.6 against 63.3-63.9 at 256K balanced; the whole backward at 256K released 341.8 against 434.9-437.9 ms.
WS_KEY_PASS = True

# The span dq pass (MODE_DQ_SPAN) by the warp-specialised Gluon kernel (`attend_ws`, two consumers of 64 entries
# sharing a loader's key and value blocks) where the call's longest span holds at least this many keys, under the
# conditions of `ws_span_pass`; 0 keeps the `tl` kernel everywhere. Measured on an H200 (32 / 2 heads, bf16,
# benchmarks/results/ws-span-dq-h200-2026-12-03/), against the `tl` kernel's in the same run: 113.7 against
# 125.9-126.4 ms at 256K released (spans of 3824 keys; the whole backward 329.6 against 342.7-343.0), equal at 64K
# released (1785: 16.0 against 15.9-16.6), slower at 16K released (2.51 against 2.28-2.30) and at balanced 256K
# (1025: 49.4 against 46.3-47.3), as the forward's span pass.
WS_SPAN_DQ_MIN_KEYS = 3072

# The span dq with one accumulator (MODE_DQ: dg known before the pass, from the kept span outputs) by the
# warp-specialised kernel where the call's longest span holds at least this many keys, as above. Measured on an
# H200 (benchmarks/results/kept-spans-h200-2026-12-04/, the whole backward against the `tl` span dq's): 305.0 against
# 313.5 ms at 256K released (spans of 3824 keys), 47.4 against 50.3 at 64K released (1785), 129.1 against 130.6 at
# 256K balanced (1025), and slower at 16K released (833: 10.87 against 10.71).
WS_SPAN_DQ1_MIN_KEYS = 1024

# The forward with gradients keeps its span outputs o_s ([B, H_q, L, k, D] in the query's dtype, k outputs' worth)
# for the backward, which reads dOut . o_s from them in its first launch and frees them; the span dq then needs no
# second accumulator (module docstring). False: nothing per span is kept, the span dq sums dOut . o_s itself (the
# fused walk), for a model trained without gradient checkpointing at lengths where k outputs per attention layer
# do not fit. Measured on an H200 (benchmarks/results/kept-spans-h200-2026-12-04/): the whole backward at 256K
# released 305.0 ms against the fused walk's 328.1, 47.4 against 50.4 at 64K; one layer's forward + backward peaks
# at 11.49 GiB against 11.59 at 256K (the outputs are freed before dq is allocated), but a model holds them for
# every attention layer between its forward and backward.
SAVE_SPAN_OUTPUTS = True


def route(q_search, k, config: SuperlinearConfig, positions, first_real, t_bound, prefix=None) -> dict:
    """The search and the span lists: everything the span pass needs besides q, k and v (a dict: anchors, the
    span log-sum-exps the span pass fills, the span entry list, gate and valid), from q_search, k and the positions.
    `forward_pass` and each chunk of `inference_forward` call it, then `attend`."""
    heads_kv = k.shape[1]
    anchors, scores = search_topk(q_search, k, config, positions, first_real, t_bound, prefix=prefix)
    lse_s = torch.empty(anchors.shape, dtype=torch.float32, device=k.device)  # NEG_BIG where unused (span_lists)
    spans, gate, valid = span_lists(config, t_bound, anchors, scores, positions, first_real, heads_kv, k.shape[2],
                                    lse_s=lse_s)
    return dict(anchors=anchors, lse_s=lse_s, spans=spans, gate=gate, valid=valid)


def attend(q, k, v, routed: dict, config: SuperlinearConfig, positions, first_real, scale, t_bound,
           for_backward: bool = True, out=None):
    """(output, o_w, lse_w, span outputs, window list) from a `route`: the span pass, then the window pass, which
    mixes the spans into the output (into `out` when given: contiguous or with q's strides)."""
    batch, heads_q, len_q, dim = q.shape
    heads_kv = k.shape[1]
    lse_s, gate = routed["lse_s"], routed["gate"]
    # spans first (each stores its o_s and lse_s), then the window, which mixes them into the output. Only the span
    # pass's launch waits on the host work before it: at 16K the GPU idles until then (about 1 ms on an H200's host,
    # benchmarks/NOTES.md item 41), so the window's lists are built after it.
    span_o = torch.empty(*lse_s.shape, dim, dtype=q.dtype, device=q.device)
    span_pass = run_entries
    if ws_span_pass(q, k, v, config, t_bound):
        from .attend_ws import run_entries_ws as span_pass
    span_pass(MODE_FWD_SPAN, routed["spans"], q, k, v, scale, span_o=span_o, out_e=lse_s)
    # the backward searches the window list by first key: its rows in position order (the forward alone needs no sort)
    wins = window_lists(config, positions, first_real, heads_kv, heads_q // heads_kv, sort=for_backward)
    if out is None:
        out = torch.empty(batch, heads_q, len_q, dim, dtype=q.dtype, device=q.device)
    o_w = lse_w = None
    if for_backward:
        o_w = torch.empty_like(out)
        lse_w = torch.empty(batch, heads_q, len_q, dtype=torch.float32, device=q.device)
    run_entries(MODE_FWD_WINDOW, wins, q, k, v, scale, o_w=o_w, lse_w=lse_w, span_o=span_o, out=out, gate=gate,
                lse_in=lse_s)
    return out, o_w, lse_w, span_o, wins


def forward_pass(q, k, v, q_search, config: SuperlinearConfig, positions, first_real, scale, t_bound,
                 for_backward: bool = True, prefix=None):
    """Output plus everything the backward needs (dict; None when `for_backward` is off). `prefix`: the running
    sums of K of the "span_mean" key when the caller already has them (`key_prefix`)."""
    # "span_mean": running sums of K, read by the search and (kept) by the gate backward
    if prefix is None and config.search_key == "span_mean":
        prefix = key_prefix(k, first_real)
    routed = route(q_search, k, config, positions, first_real, t_bound, prefix)
    out, o_w, lse_w, span_o, wins = attend(q, k, v, routed, config, positions, first_real, scale, t_bound,
                                           for_backward)
    if not for_backward:
        return out, None
    saved = dict(anchors=routed["anchors"], valid=routed["valid"], gate=routed["gate"], o_w=o_w, lse_w=lse_w,
                 lse_s=routed["lse_s"], wins=wins, spans=routed["spans"], prefix=prefix, config=config,
                 positions=positions, first_real=first_real, t_bound=t_bound,
                 span_o=span_o if SAVE_SPAN_OUTPUTS else None)
    return out, saved


def _ws_capable(q, k, v) -> bool:
    """What every warp-specialised Gluon kernel takes: a Hopper GPU (no interpreter), head dim 128, K of the query's
    dtype, query rows with a contiguous last dim, and 16-bit, contiguous, aligned K and V."""
    return (q.is_cuda and not interpreting() and q.shape[-1] == 128 and k.dtype == q.dtype and q.stride(-1) == 1
            and uses_descriptors(q, k, v) and capability(q.device) == (9, 0))


def ws_span_pass(q, k, v, config: SuperlinearConfig, t_bound: int, min_keys: int | None = None) -> bool:
    """Whether the forward's span pass runs on the warp-specialised kernel (`WS_SPAN_MIN_KEYS`; the span dq pass
    asks with `WS_SPAN_DQ_MIN_KEYS` or `WS_SPAN_DQ1_MIN_KEYS`)."""
    min_keys = WS_SPAN_MIN_KEYS if min_keys is None else min_keys
    return min_keys > 0 and _ws_capable(q, k, v) and max_span_length(config, t_bound) >= min_keys


def ws_key_pass(q, k, v) -> bool:
    """Whether the backward's dk/dv passes run on the warp-specialised kernel (`WS_KEY_PASS`)."""
    return WS_KEY_PASS and _ws_capable(q, k, v)


def inference_chunk_rows(len_q: int, num_spans: int, batch: int = 1, held: float = 0.0) -> int:
    """Query rows per sequence in a chunk of an inference forward (len_q when it runs as one pass). `held`: what
    the call holds for all its chunks (the span-mean running sums), as a fraction of the output; the chunks get
    the rest of INFERENCE_EXTRA."""
    if INFERENCE_EXTRA <= 0 or batch * len_q < INFERENCE_START_ROWS:
        return len_q
    fit = int(len_q * max(INFERENCE_EXTRA - held, 0.0) / (num_spans + 0.5)) // CHUNK_ALIGN * CHUNK_ALIGN
    rows = cdiv(max(cdiv(INFERENCE_MIN_ROWS, batch), fit), CHUNK_ALIGN) * CHUNK_ALIGN
    return len_q if rows >= len_q else rows


def inference_plan(q, k, config: SuperlinearConfig, first_real, key_sums: KeySums | None = None):
    """(query rows per chunk, the span-mean running sums or None) of an inference forward: the sums are built once
    over the keys and held by every chunk, so the chunks get what they leave of INFERENCE_EXTRA. `key_sums`: the
    caller's kept sums (`prefix.KeySums`), updated here instead of built anew."""
    prefix = None
    if config.search_key == "span_mean":
        prefix = key_prefix(k, first_real) if key_sums is None else key_sums.update(k, first_real)
    held = 0.0
    if prefix is not None:
        held = sum(t.numel() * t.element_size() for t in (prefix.pairs, prefix.third, prefix.norm))
        held /= q.numel() * q.element_size()
    return inference_chunk_rows(q.shape[2], config.num_spans, q.shape[0], held), prefix


def inference_forward(q, k, v, q_search, config: SuperlinearConfig, positions, first_real, scale, t_bound,
                      key_sums: KeySums | None = None):
    """The forward without gradients, in chunks of query rows (`inference_plan`): each chunk is a prefill chunk at
    its own positions over all the keys, so each row's output is the whole pass's (up to rounding). The output
    takes the query's memory layout where the query is dense (a model's [B, L, H, D] projections seen as [B, H, L,
    D] included), and the window pass writes each chunk's rows straight into it: no copy of the output (2.5 of 104
    ms at 256K released on an H200, benchmarks/NOTES.md item 45), and a model's transpose back is free."""
    len_q = q.shape[2]
    rows, prefix = inference_plan(q, k, config, first_real, key_sums)
    if rows >= len_q:
        return forward_pass(q, k, v, q_search, config, positions, first_real, scale, t_bound, for_backward=False,
                            prefix=prefix)[0]
    out = torch.empty_like(q)  # q's strides where q is dense, else contiguous
    for start in range(0, len_q, rows):
        part = slice(start, min(len_q, start + rows))
        q_part, out_part = q[:, :, part], out[:, :, part]
        routed = route(q_search[:, :, part], k, config, positions[part], first_real, t_bound, prefix)
        into = out_part if at_query_offsets(out_part, q_part) else None  # else written apart, then copied
        got = attend(q_part, k, v, routed, config, positions[part], first_real, scale, t_bound, for_backward=False,
                     out=into)[0]
        if into is None:
            out_part.copy_(got)
    return out


def backward_pass(grad_out, q, k, v, q_search, saved, scale, fuse_span_dq: bool = True, release: bool = False):
    """(dq, dk, dv, dq_search) in the inputs' dtypes. The per-row math between the passes is `mix_bwd`'s. With the
    forward's span outputs in `saved`, dOut . o_s comes from them (and with `release` they leave `saved` once read);
    else the fused span dq sums it (`fuse_span_dq`) or a DELTA walk does."""
    do = grad_out.contiguous()
    gate, valid, lse_s, lse_w = saved["gate"], saved["valid"], saved["lse_s"], saved["lse_w"]
    wins, spans = saved["wins"], saved["spans"]

    stored = saved.get("span_o") is not None
    # per span: dOut . o_s_j (stored) or dOut . o_w (the fused span dq's delta)
    dow, lse_j, per_span = mix_bwd.prep(do, saved["o_w"], lse_s, lse_w, valid, span_o=saved.get("span_o"))
    if release:
        saved["span_o"] = None
    fused = fuse_span_dq and not stored
    span_dq = run_entries
    if ws_span_pass(q, k, v, saved["config"], saved["t_bound"], WS_SPAN_DQ_MIN_KEYS if fused else WS_SPAN_DQ1_MIN_KEYS):
        from .attend_ws import run_entries_ws as span_dq
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    span_part = per_span  # dOut . o_s_j, or written by the walk below (used spans; `mix` masks the others)
    if fused:  # span_part = sum p (dp - dOut . o_w) over each span
        span_part = torch.empty_like(lse_s)
        span_dq(MODE_DQ_SPAN, spans, q, k, v, scale, do=do, lse_in=lse_j, coef=gate, delta=per_span, out_e=span_part,
                dq=dq)
    elif not stored:  # span_part = dOut . o_s
        span_part = torch.empty_like(lse_s)
        run_entries(MODE_DELTA, spans, q, k, v, scale, do=do, lse_in=lse_s, out_e=span_part)
    ws_keys = ws_key_pass(q, k, v)
    m = mix_bwd.mix(span_part, dow, gate, valid, lse_j, lse_s, lse_w, fused=fused, fold=ws_keys)
    if not fused:
        span_dq(MODE_DQ, spans, q, k, v, scale, do=do, lse_in=lse_j, coef=gate, delta=m["span_delta"], dq=dq)

    ones = torch.ones_like(m["lse_eff"])
    dq_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    run_entries(MODE_DQ, wins, q, k, v, scale, do=do, lse_in=m["lse_eff"], coef=ones, delta=m["delta_eff"], dq=dq,
                dq_out=dq_out)
    dq = dq_out  # free the float32 accumulator before the other gradients are allocated
    dk = torch.empty(k.shape, dtype=torch.float32, device=k.device)
    dv = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    if ws_keys:  # coefficients folded in by `mix` (the window's is 1)
        from .attend_bwd_ws import dkdv_ws

        dkdv_ws(wins, q, k, v, do, m["lse_eff"], None, m["delta_eff"], dk, dv, scale, accumulate=False)
        dkdv_ws(spans, q, k, v, do, m["lse_fold"], None, m["dg_fold"], dk, dv, scale, accumulate=True)
    else:
        dkdv(wins, q, k, v, do, m["lse_eff"], ones, m["delta_eff"], dk, dv, scale, accumulate=False)
        dkdv(spans, q, k, v, do, lse_j, gate, m["span_delta"], dk, dv, scale, accumulate=True)
    dqs = gate_backward(q_search, k, saved["anchors"], m["ds"], dk, prefix=saved["prefix"],
                        config=saved["config"], positions=saved["positions"], first_real=saved["first_real"])
    return dq, dk.to(k.dtype), dv.to(v.dtype), dqs


class _SuperlinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, q_search, config, positions, first_real, scale, t_bound):
        out, saved = forward_pass(q, k, v, q_search, config, positions, first_real, scale, t_bound)
        ctx.save_for_backward(q, k, v, q_search)
        ctx.saved = saved
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, q_search = ctx.saved_tensors
        dq, dk, dv, dqs = backward_pass(grad_out, q, k, v, q_search, ctx.saved, ctx.scale, release=True)
        ctx.saved = None
        return dq, dk, dv, dqs, None, None, None, None, None


def superlinear_prefill(q, k, v, q_search, config, positions, first_real, scale, t_bound=None,
                        key_sums: KeySums | None = None):
    """Superlinear attention through the Triton kernels, differentiable in q, k, v and q_search. `key_sums`: running
    sums of the span-mean key kept between calls of the layer, used by a call without gradients."""
    t_bound = k.shape[2] if t_bound is None else t_bound
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, q_search))
    if not needs_grad:
        return inference_forward(q, k, v, q_search, config, positions, first_real, scale, t_bound, key_sums)
    return _SuperlinearFunction.apply(q, k, v, q_search, config, positions, first_real, scale, t_bound)
