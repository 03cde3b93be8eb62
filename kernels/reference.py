"""Vectorized PyTorch reference of Superlinear attention: the ground truth of every other backend.

It follows `docs/semantics.md` literally, one block of query rows at a time:

1. token logits ``z = scale * q . k`` for the block against every key it may see (one matmul);
2. router scores ``s_i = q_search . key_i`` at the power-law anchors (``key_i`` is the anchor's key, or the
   mean key of its span with ``search_key="span_mean"``, from running sums of K), top-k per query and head;
3. for each selected span j, one softmax over span_j UNION window. All k softmaxes share the window's
   logits, so they are folded into one weight row per query,
   ``P = sum_j g_j softmax_j(z)``, and the output is a single matmul ``P @ V``.

The block size is chosen so that one block's [batch, heads, rows, keys] tensors stay within a fixed
element budget: memory is O(budget), never L_q x L_kv, and there is no Python loop over queries,
heads or anchors. Everything runs in float32 (float64 for float64 inputs) and autograd gives the
the gradients of docs/semantics.md, into q_search and k through the gate included.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .geometry import anchor_table, span_tables, window_length
from .inputs import AttentionInputs
from .selection import key_prefix_sums, route

__all__ = ["reference_attention", "BLOCK_ELEMENTS"]

# Elements of one block's largest intermediate ([batch, heads, rows, keys]); 2^24 fp32 is 64 MiB.
BLOCK_ELEMENTS = 1 << 24


def _block_rows(inp: AttentionInputs, t_max: int) -> int:
    batch, heads_q, len_q, _ = inp.q.shape
    len_kv = inp.k.shape[2]
    cfg = inp.config
    tables = span_tables(cfg, t_max)
    span_len = int(tables.back[t_max]) + int(tables.fwd[t_max]) + 1
    candidates = anchor_table(cfg, t_max).numel()
    per_row = batch * heads_q * (len_kv + cfg.num_spans * span_len + candidates)
    return max(1, min(len_q, BLOCK_ELEMENTS // max(per_row, 1)))


def reference_attention(inp: AttentionInputs) -> torch.Tensor:
    q, k, v = inp.q, inp.k, inp.v
    batch, heads_q, len_q, dim = q.shape
    heads_kv = k.shape[1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    if len_q == 0:
        return q.new_zeros(batch, heads_q, 0, v.shape[-1])

    tokens_seen = inp.cache_position[None, :] + 1 - inp.first_real[:, None]  # t per [B, L_q]
    t_max = max(int(tokens_seen.max()), 1)
    rows = _block_rows(inp, t_max)

    qg = q.reshape(batch, heads_kv, inp.group, len_q, dim).to(compute)
    sg = inp.q_search.reshape(batch, heads_kv, inp.group, len_q, dim).to(compute)
    kc, vc = k.to(compute), v.to(compute)
    prefix = key_prefix_sums(kc) if inp.config.search_key == "span_mean" else None

    use_checkpoint = torch.is_grad_enabled() and len_q > rows and any(
        t.requires_grad for t in (q, k, v, inp.q_search)
    )
    outputs = []
    for start in range(0, len_q, rows):
        stop = min(start + rows, len_q)
        args = (qg[:, :, :, start:stop], sg[:, :, :, start:stop], kc, vc,
                inp.cache_position[start:stop], tokens_seen[:, start:stop], prefix)
        if use_checkpoint:
            outputs.append(checkpoint(_block, inp, *args, use_reentrant=False))
        else:
            outputs.append(_block(inp, *args))
    out = torch.cat(outputs, dim=3) if len(outputs) > 1 else outputs[0]
    return out.reshape(batch, heads_q, len_q, v.shape[-1]).to(q.dtype)


def _block(
    inp: AttentionInputs,
    qb: torch.Tensor,  # [B, H_kv, G, R, D]
    sb: torch.Tensor,  # [B, H_kv, G, R, D]
    kc: torch.Tensor,  # [B, H_kv, L_kv, D]
    vc: torch.Tensor,  # [B, H_kv, L_kv, D_v]
    pos: torch.Tensor,  # [R] absolute query positions
    t: torch.Tensor,  # [B, R] tokens seen
    prefix: torch.Tensor | None,  # key_prefix_sums(kc) for the span-mean search key, else None
) -> torch.Tensor:
    cfg = inp.config
    device = qb.device
    lowest = torch.finfo(qb.dtype).min
    s0 = inp.first_real[:, None]  # [B, 1]
    width = window_length(cfg)
    n_keys = int(pos.max()) + 1
    t_top = max(int(t.max()), 1)

    keys = kc[:, :, :n_keys]
    logits = torch.einsum("bhgrd,bhkd->bhgrk", qb, keys) * inp.scale  # [B, H_kv, G, R, K]

    # Router: top-k anchors per (row, head) and the spans around them; the gate stays differentiable.
    routing = route(cfg, sb, kc, pos, t, s0, prefix)
    chosen_ok, gate = routing.ok, routing.gate
    tables = span_tables(cfg, t_top, device)
    lo, hi = routing.lo, routing.hi
    span_len = int(tables.back[t_top]) + int(tables.fwd[t_top]) + 1
    span_pos = lo[..., None] + torch.arange(span_len, device=device)  # [B, H_kv, G, R, k, S]
    span_ok = (span_pos <= hi[..., None]) & chosen_ok[..., None]
    span_pos = span_pos.clamp(0, n_keys - 1)
    flat_pos = span_pos.flatten(-2)
    span_logits = logits.gather(-1, flat_pos).view(span_pos.shape).masked_fill(~span_ok, lowest)

    # Window: [max(q - W + 1, s0), q], a band of the logits row.
    band_start = min(max(0, int(pos.min()) - width + 1), n_keys - 1)  # >= 1 column even when W = 0
    band_pos = torch.arange(band_start, n_keys, device=device)
    win_lo = torch.maximum(pos[None, :] - width + 1, s0)  # [B, R]
    win_ok = (band_pos >= win_lo[:, :, None]) & (band_pos <= pos[None, :, None])  # [B, R, band]
    win_ok = win_ok[:, None, None]
    band = logits[..., band_start:].masked_fill(~win_ok, lowest)
    win_max = band.amax(dim=-1)  # [B, H_kv, G, R]
    win_exp = torch.exp(band - win_max[..., None]) * win_ok
    win_sum = win_exp.sum(dim=-1)

    # One joint softmax per span over span_j UNION window, mixed by the gate.
    joint_max = torch.maximum(span_logits.amax(dim=-1), win_max[..., None])  # [B, H_kv, G, R, k]
    span_exp = torch.exp(span_logits - joint_max[..., None]) * span_ok
    win_rescale = torch.exp(win_max[..., None] - joint_max)
    denom = span_exp.sum(dim=-1) + win_sum[..., None] * win_rescale
    coef = gate / denom.clamp_min(torch.finfo(denom.dtype).tiny)
    no_span = ~chosen_ok.any(dim=-1)  # window alone: "no candidate at all" (docs/semantics.md)
    win_weight = (coef * win_rescale).sum(dim=-1) + no_span / win_sum.clamp_min(torch.finfo(win_sum.dtype).tiny)
    win_weight = win_weight * (t >= 1)[:, None, None, :]  # padding rows: zeros

    weights = torch.cat(
        [logits.new_zeros(*logits.shape[:-1], band_start), win_exp * win_weight[..., None]], dim=-1
    )
    weights = weights.scatter_add(-1, flat_pos, (span_exp * coef[..., None]).flatten(-2))
    return torch.einsum("bhgrk,bhkd->bhgrd", weights, vc[:, :, :n_keys])
