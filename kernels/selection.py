"""Which spans each query selects: the router half of Superlinear attention.

Shared by the reference (which differentiates the gate through it) and by `select_spans`, the public
view used for span-recall measurements and router training, so both always agree on the selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SuperlinearInputError
from .geometry import anchor_table, span_bounds, span_tables, window_length
from .inputs import check_inputs

__all__ = ["Candidates", "candidates", "key_prefix_sums", "Routing", "route", "Selection", "select_spans"]


def key_prefix_sums(k: torch.Tensor) -> torch.Tensor:
    """[B, H_kv, L_kv + 1, D] float64 running sums of the keys, starting with a zero row.

    The mean key of the range [lo, hi] is ``(P[hi + 1] - P[lo]) / (hi - lo + 1)``: two loads per candidate
    whatever the span's length. float64 keeps that difference exact enough at a million tokens, and the
    sums stay differentiable, so a span-mean score sends its gradient to every key of the range.
    """
    sums = k.to(torch.float64).cumsum(dim=2)
    return torch.nn.functional.pad(sums, (0, 0, 1, 0))


@dataclass
class Candidates:
    """Every candidate anchor of one block of query rows and its router score."""

    anchor: torch.Tensor  # int64 [R, N], decreasing along N (nearest first)
    lo: torch.Tensor  # int64 [B, R, N]: first key of the candidate's span
    hi: torch.Tensor  # int64 [B, R, N]: last key of the candidate's span
    valid: torch.Tensor  # bool [B, R, N]: the anchor is a real token (>= s0)
    scores: torch.Tensor  # [B, H_kv, G, R, N] unscaled router scores in sb's dtype (differentiable)


def candidates(cfg, sb: torch.Tensor, kc: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, s0: torch.Tensor,
               prefix: torch.Tensor | None = None) -> Candidates:
    """Router scores of every candidate anchor (docs/semantics.md): the one home of the search rule.

    sb: search queries [B, H_kv, G, R, D]; kc: keys [B, H_kv, L_kv, D]; pos: [R] query positions;
    t: [B, R] tokens seen; s0: [B, 1] first real key; prefix: `key_prefix_sums(kc)` for the "span_mean"
    search key (computed here when not given). Scores are unscaled dot products; invalid candidates
    carry a score too (masked by `valid`, never selected).
    """
    device = sb.device
    t_top = max(int(t.max()), 1) if t.numel() else 1
    offsets = anchor_table(cfg, t_top, device)
    anchors = pos[:, None] + 1 - offsets[None, :]  # [R, N]
    tables = span_tables(cfg, t_top, device)
    lo, hi = span_bounds(cfg, anchors[None], t[:, :, None], s0[:, :, None], pos[None, :, None], tables)
    valid = (anchors[None] >= s0[:, :, None]).expand_as(lo)
    batch, heads_kv, _, rows, dim = sb.shape
    n_cand = offsets.numel()
    if cfg.search_key == "span_mean":
        if prefix is None:
            prefix = key_prefix_sums(kc)
        n_keys = prefix.shape[2] - 1

        def at(index: torch.Tensor) -> torch.Tensor:  # prefix rows at [B, R, N] indices -> [B, H_kv, R, N, D]
            flat = index.clamp(0, n_keys).reshape(batch, 1, rows * n_cand, 1).expand(-1, heads_kv, -1, dim)
            return prefix.gather(2, flat).view(batch, heads_kv, rows, n_cand, dim)

        count = (hi - lo + 1).clamp(min=1).to(prefix.dtype)[:, None, :, :, None]
        search_keys = ((at(hi + 1) - at(lo)) / count).to(sb.dtype)
    else:
        search_keys = kc[:, :, anchors.clamp(min=0)]  # [B, H_kv, R, N, D]
    scores = torch.einsum("bhgrd,bhrnd->bhgrn", sb, search_keys)
    return Candidates(anchor=anchors, lo=lo, hi=hi, valid=valid, scores=scores)


@dataclass
class Routing:
    """Selected spans of one block of query rows, per [B, H_kv, G, R, k] (k = min(num_spans, candidates))."""

    ok: torch.Tensor  # bool: a span was selected in this slot
    gate: torch.Tensor  # softmax of the selected router scores (0 in empty slots), differentiable
    anchor: torch.Tensor  # int64 anchor position
    lo: torch.Tensor  # int64 first key of the span (inclusive)
    hi: torch.Tensor  # int64 last key of the span (inclusive)


def route(cfg, sb: torch.Tensor, kc: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, s0: torch.Tensor,
          prefix: torch.Tensor | None = None) -> Routing:
    """Top-k of the candidates' router scores per (row, head), the gate over them, and their spans.

    Arguments as in `candidates`.
    """
    lowest = torch.finfo(sb.dtype).min
    cand = candidates(cfg, sb, kc, pos, t, s0, prefix)
    scores = cand.scores
    n_cand = cand.anchor.shape[1]
    shape = scores.shape
    cand_ok = cand.valid[:, None, None].expand(shape)
    ranked = scores.detach().masked_fill(~cand_ok, float("-inf"))
    # Candidates come in decreasing anchor order, so a stable sort ranks equal scores larger anchor
    # first: the order the Triton search produces, so that both select the same spans on ties.
    pick = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., : min(cfg.num_spans, n_cand)]
    ok = cand_ok.gather(-1, pick)
    chosen = scores.gather(-1, pick).masked_fill(~ok, lowest)
    gate = torch.softmax(chosen, dim=-1) * ok if n_cand else scores.new_zeros(pick.shape)

    def picked(per_candidate: torch.Tensor) -> torch.Tensor:
        return per_candidate.expand(shape).gather(-1, pick)

    return Routing(ok=ok, gate=gate, anchor=picked(cand.anchor), lo=picked(cand.lo[:, None, None]),
                   hi=picked(cand.hi[:, None, None]))


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
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise SuperlinearInputError(f"block_rows must be a positive integer, got {block_rows!r}")
    inp = check_inputs(q_search, k, k, q_search, config, cache_position, attention_mask, None,
                       query_name="q_search")
    batch, heads_q, len_q, dim = q_search.shape
    heads_kv = k.shape[1]
    num = config.num_spans
    compute = torch.float64 if q_search.dtype == torch.float64 else torch.float32
    sg = q_search.reshape(batch, heads_kv, inp.group, len_q, dim).to(compute)
    kc = k.to(compute)
    prefix = key_prefix_sums(kc) if config.search_key == "span_mean" else None
    s0 = inp.first_real[:, None]
    t_all = inp.cache_position[None, :] + 1 - s0
    out = {name: [] for name in ("anchor", "lo", "hi", "gate")}
    for start in range(0, len_q, block_rows):
        stop = min(start + block_rows, len_q)
        r = route(config, sg[:, :, :, start:stop], kc, inp.cache_position[start:stop], t_all[:, start:stop], s0,
                  prefix)
        pad = num - r.ok.shape[-1]
        fill = {"anchor": -1, "lo": 0, "hi": -1, "gate": 0.0}
        for name, value in (("anchor", r.anchor), ("lo", r.lo), ("hi", r.hi), ("gate", r.gate)):
            value = value.masked_fill(~r.ok, fill[name])
            if pad:
                value = torch.nn.functional.pad(value, (0, pad), value=fill[name])
            out[name].append(value)
    kinds = {"anchor": torch.int64, "lo": torch.int64, "hi": torch.int64, "gate": torch.float32}
    flat = {name: (torch.cat(parts, dim=3) if parts else torch.empty(0, dtype=kinds[name], device=k.device)
                   ).reshape(batch, heads_q, len_q, num) for name, parts in out.items()}  # no parts: no query rows
    pos = inp.cache_position[None, :]
    return Selection(
        anchor=flat["anchor"],
        span_lo=flat["lo"],
        span_hi=flat["hi"],
        gate=flat["gate"].float(),
        window_lo=torch.maximum(pos - window_length(config) + 1, s0),
        window_hi=torch.where(t_all >= 1, pos.expand_as(t_all), s0 - 1),
    )
