"""Which spans each query selects: the router half of Superlinear attention.

Shared by the reference (which differentiates the gate through it) and by `select_spans`, the public
view used for span-recall measurements and router training, so both always agree on the selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .geometry import anchor_table, span_tables, window_length
from .inputs import check_inputs

__all__ = ["Routing", "route", "Selection", "select_spans"]


@dataclass
class Routing:
    """Selected spans of one block of query rows, per [B, H_kv, G, R, k] (k = min(num_spans, candidates))."""

    ok: torch.Tensor  # bool: a span was selected in this slot
    gate: torch.Tensor  # softmax of the selected router scores (0 in empty slots), differentiable
    anchor: torch.Tensor  # int64 anchor position
    lo: torch.Tensor  # int64 first key of the span (inclusive)
    hi: torch.Tensor  # int64 last key of the span (inclusive)


def route(cfg, sb: torch.Tensor, kc: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, s0: torch.Tensor) -> Routing:
    """Router scores at the power-law anchors, top-k per (row, head), and the spans around them.

    sb: search queries [B, H_kv, G, R, D]; kc: keys [B, H_kv, L_kv, D]; pos: [R] query positions;
    t: [B, R] tokens seen; s0: [B, 1] first real key. Scores are unscaled dot products.
    """
    device = sb.device
    lowest = torch.finfo(sb.dtype).min
    t_top = max(int(t.max()), 1)
    offsets = anchor_table(cfg, t_top, device)
    n_cand = offsets.numel()
    if n_cand:
        anchors = pos[:, None] + 1 - offsets[None, :]  # [R, N]
        anchor_keys = kc[:, :, anchors.clamp(min=0)]  # [B, H_kv, R, N, D]
        scores = torch.einsum("bhgrd,bhrnd->bhgrn", sb, anchor_keys)
        cand_ok = (anchors[None] >= s0[:, :, None])[:, None, None].expand_as(scores)
        ranked = scores.detach().masked_fill(~cand_ok, float("-inf"))
        # Candidates come in decreasing anchor order, so a stable sort ranks equal scores larger anchor
        # first: the order the Triton search produces, so that both select the same spans on ties.
        pick = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., : min(cfg.num_spans, n_cand)]
        ok = cand_ok.gather(-1, pick)
        chosen = scores.gather(-1, pick).masked_fill(~ok, lowest)
        gate = torch.softmax(chosen, dim=-1) * ok
        anchor = anchors.expand_as(scores).gather(-1, pick)
    else:
        shape = (*sb.shape[:4], 0)
        ok = torch.zeros(shape, dtype=torch.bool, device=device)
        gate = sb.new_zeros(shape)
        anchor = torch.zeros(shape, dtype=torch.int64, device=device)
    tables = span_tables(cfg, t_top, device)
    t_idx = t.clamp(min=0)[:, None, None, :, None]
    lo = torch.maximum(anchor - tables.back[t_idx], s0[:, None, None, :, None])
    hi = torch.minimum(anchor + tables.fwd[t_idx], pos[None, None, None, :, None] - window_length(cfg))
    return Routing(ok=ok, gate=gate, anchor=anchor, lo=lo, hi=hi)


@dataclass
class Selection:
    """Spans chosen by every query, as inclusive key positions; slots with anchor == -1 are empty."""

    anchor: torch.Tensor  # int64 [B, H_q, L_q, k]
    span_lo: torch.Tensor  # int64 [B, H_q, L_q, k]
    span_hi: torch.Tensor  # int64 [B, H_q, L_q, k]
    gate: torch.Tensor  # float32 [B, H_q, L_q, k]
    window_lo: torch.Tensor  # int64 [B, L_q] (window_lo > window_hi: empty window, e.g. padding rows)
    window_hi: torch.Tensor  # int64 [B, L_q]

    def mask(self, n_keys: int) -> torch.Tensor:
        """bool [B, H_q, L_q, n_keys]: keys inside a selected span or the window (small inputs only)."""
        x = torch.arange(n_keys, device=self.anchor.device)
        live = (self.anchor >= 0)[..., None]
        spans = ((x >= self.span_lo[..., None]) & (x <= self.span_hi[..., None]) & live).any(dim=-2)
        window = (x >= self.window_lo[:, None, :, None]) & (x <= self.window_hi[:, None, :, None])
        return spans | window


@torch.no_grad()
def select_spans(q_search, k, config, *, cache_position=None, attention_mask=None, block_rows: int = 256) -> Selection:
    """The spans Superlinear attention would use for these search queries and keys."""
    inp = check_inputs(q_search, k, k, q_search, config, cache_position, attention_mask, None)
    batch, heads_q, len_q, dim = q_search.shape
    heads_kv = k.shape[1]
    num = config.num_spans
    compute = torch.float64 if q_search.dtype == torch.float64 else torch.float32
    sg = q_search.reshape(batch, heads_kv, inp.group, len_q, dim).to(compute)
    kc = k.to(compute)
    s0 = inp.first_real[:, None]
    t_all = inp.cache_position[None, :] + 1 - s0
    out = {name: [] for name in ("anchor", "lo", "hi", "gate")}
    for start in range(0, len_q, block_rows):
        stop = min(start + block_rows, len_q)
        r = route(config, sg[:, :, :, start:stop], kc, inp.cache_position[start:stop], t_all[:, start:stop], s0)
        pad = num - r.ok.shape[-1]
        fill = {"anchor": -1, "lo": 0, "hi": -1, "gate": 0.0}
        for name, value in (("anchor", r.anchor), ("lo", r.lo), ("hi", r.hi), ("gate", r.gate)):
            value = value.masked_fill(~r.ok, fill[name])
            if pad:
                value = torch.nn.functional.pad(value, (0, pad), value=fill[name])
            out[name].append(value)
    flat = {name: torch.cat(parts, dim=3).reshape(batch, heads_q, len_q, num) for name, parts in out.items()}
    pos = inp.cache_position[None, :]
    return Selection(
        anchor=flat["anchor"],
        span_lo=flat["lo"],
        span_hi=flat["hi"],
        gate=flat["gate"].float(),
        window_lo=torch.maximum(pos - window_length(config) + 1, s0),
        window_hi=torch.where(t_all >= 1, pos.expand_as(t_all), s0 - 1),
    )
