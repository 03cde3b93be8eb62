"""Training losses: next-token loss, distillation from a dense teacher's next-token distribution, and the router
losses (KL to the dense attention's span mass, output MSE) with span recall.

The router losses and span recall work on one captured attention call of a converted layer
(`slconvert.attention.capture_attention`: q, k, v detached, the layer's config, scale, mask and key positions) and
on a sample of its query rows, so their cost is O(rows x keys) however long the sequence is.

For a query at position q (t tokens seen) the candidate anchors are a_i = q + 1 - o(i) and candidate i
covers span_i = [max(a_i - back[t], s0), min(a_i + fwd[t], q - W)] (docs/semantics.md). The target distribution
over candidates is the dense attention's probability mass inside each span, normalized,

    target_i = P_dense(span_i) / sum_j P_dense(span_j),

with P_dense the softmax of the same layer's q and k (same scale, same hidden states). The router's
distribution is the softmax of its search scores s_i = q_search . key_i over all candidates (key_i: the anchor's
key, or its span's mean key with the "span_mean" search key; `slkernels.selection.candidates`), and the
loss is KL(target || router). Only q_search = router(q) carries a gradient (q and k are detached), so the
loss trains the router alone and never moves the host model, whatever else is trainable.

Span recall is the share of the dense attention mass that Superlinear attention reads (the union of the
selected spans and the window); the evaluation reports the same quantity over all rows.
"""

from __future__ import annotations

import functools

import torch
from slkernels import select_spans, superlinear_attention
from slkernels.geometry import anchor_table
from slkernels.inputs import first_real_token
from slkernels.reference import BLOCK_ELEMENTS
from slkernels.selection import candidates
from torch.utils.checkpoint import checkpoint

from .data import IGNORE

__all__ = ["RowSample", "sample_rows", "router_losses", "next_token_loss", "next_token_sums", "distill_sums",
           "average_loss", "dense_probs", "candidate_mass", "covered_keys"]


class RowSample:
    """Query rows (positions in the key axis) used for a layer's losses, all beyond the window."""

    def __init__(self, index: torch.Tensor, positions: torch.Tensor):
        self.index = index  # rows of q (int64 [R])
        self.positions = positions  # their key-axis positions (int64 [R])


def answer_rows(labels: torch.Tensor, kinds: list[str]) -> torch.Tensor:
    """bool [L]: the query rows that predict an answer token (row t predicts token t + 1) of some needle sample of
    the micro-batch (`kinds[i] == "niah"`; a text sample labels every token, so it would prefer every row)."""
    needle = labels[torch.tensor([kind == "niah" for kind in kinds], dtype=torch.bool, device=labels.device)]
    rows = torch.zeros(labels.shape[1], dtype=torch.bool, device=labels.device)
    rows[:-1] = (needle[:, 1:] != IGNORE).any(0)
    return rows


def sample_rows(record: dict, count: int, generator: torch.Generator,
                prefer: torch.Tensor | None = None) -> RowSample | None:
    """Up to `count` distinct query rows whose t exceeds W + 1 in some batch row; None when there are none.
    `prefer` (bool [L_q], e.g. `answer_rows`): those eligible rows are taken first (a random subset when more than
    `count`), the rest drawn at random from the other eligible rows."""
    q, config = record["q"], record["config"]
    len_q, len_kv = q.shape[2], record["k"].shape[2]
    positions = record.get("cache_position")
    if positions is None:
        positions = torch.arange(len_kv - len_q, len_kv, device=q.device)
    first = _first_real(record, q.shape[0], q.device)
    eligible = (positions[None, :] + 1 - first.min()) > config.window + 1
    eligible = eligible[0].cpu()
    if not eligible.any():
        return None
    first_pick = eligible & prefer.cpu() if prefer is not None else torch.zeros_like(eligible)
    rows = torch.cat([_draw(torch.nonzero(pool).flatten(), room, generator)
                      for pool, room in ((first_pick, count), (eligible & ~first_pick, count - int(first_pick.sum())))])
    rows = rows.sort().values.to(q.device)
    return RowSample(rows, positions[rows])


def _draw(rows: torch.Tensor, room: int, generator: torch.Generator) -> torch.Tensor:
    """All of `rows` when they fit in `room`, else `room` of them at random."""
    if rows.numel() <= max(room, 0):
        return rows
    return rows[torch.randperm(rows.numel(), generator=generator)[:max(room, 0)]]


def _first_real(record: dict, batch: int, device) -> torch.Tensor:
    mask = record.get("attention_mask")
    if mask is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    return first_real_token(mask)


def router_losses(record: dict, router: torch.nn.Module, rows: RowSample, *, kl: bool = True, mse: bool = False,
                  recall: bool = True) -> dict:
    """KL and/or MSE (differentiable w.r.t. the router) and span recall (a float) on the sampled rows.

    Returns a dict with any of ``kl`` and ``mse`` (0-dim tensors) and ``recall`` (float, the mean over
    (batch, head, row) of the dense mass inside the selected spans plus the window), ``rows``.
    """
    # Explicit float32 math: the scores, softmaxes and cumulative sums must not follow an enclosing autocast.
    with torch.autocast(record["q"].device.type, enabled=False):
        return _router_losses(record, router, rows, kl=kl, mse=mse, recall=recall)


def _router_losses(record, router, rows, *, kl, mse, recall):
    q, k, v, config = record["q"], record["k"], record["v"], record["config"]
    batch, heads_q, _, dim = q.shape
    heads_kv, len_kv = k.shape[1], k.shape[2]
    group = heads_q // heads_kv
    scale = record.get("scale") or dim ** -0.5
    first = _first_real(record, batch, q.device)
    mask = record.get("attention_mask")
    per_row = batch * heads_q * (len_kv + 2 * len(anchor_table(config, len_kv)) + 1)
    block = max(1, BLOCK_ELEMENTS // max(per_row, 1))  # the reference's memory budget per block of rows
    kf = k.float()
    totals = {"kl": q.new_zeros((), dtype=torch.float32), "mse": q.new_zeros((), dtype=torch.float32)}
    recall_sum, count = 0.0, 0
    for start in range(0, rows.index.numel(), block):
        index = rows.index[start:start + block]
        pos = rows.positions[start:start + block]
        qb = q[:, :, index].float()  # [B, H_q, R, D]
        q_search = router(q[:, :, index])  # gradient flows into the router only
        probs, inside_window, valid = dense_probs(qb, kf, pos, first, scale, config.window, group)
        weight = valid[:, None, :].float()  # [B, 1, R]: rows beyond the window in this batch row
        n = float(weight.sum()) * heads_q
        if kl:
            totals["kl"] = totals["kl"] + (_kl_rows(probs, q_search, kf, pos, first, config, group) * weight).sum()
        if mse:
            out = superlinear_attention(q[:, :, index], k, v, q_search.to(q.dtype), config, cache_position=pos,
                                        attention_mask=mask, scale=scale, backend="reference").float()
            values = v[:, :, : probs.shape[-1]].float().repeat_interleave(group, dim=1)
            dense = torch.einsum("bhrk,bhkd->bhrd", probs, values)
            totals["mse"] = totals["mse"] + (((out - dense) ** 2).mean(-1) * weight).sum()
        if recall:
            with torch.no_grad():
                selection = select_spans(q_search.detach(), k, config, cache_position=pos, attention_mask=mask)
                inside = covered_keys(inside_window, selection.span_lo, selection.span_hi, selection.anchor >= 0)
                recall_sum += float(((probs * inside).sum(-1) * weight).sum())
        count += n
    out = {"rows": int(rows.index.numel())}
    if kl:
        out["kl"] = totals["kl"] / max(count, 1)
    if mse:
        out["mse"] = totals["mse"] / max(count, 1)
    if recall:
        out["recall"] = recall_sum / max(count, 1)
    return out


@torch.no_grad()
def covered_keys(inside_window: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """bool [B, H_q, R, K]: the keys Superlinear attention reads, the window's (`inside_window`) and those of the
    spans [lo, hi] ([B, H_q, R, k], `live` marking the slots that hold a span)."""
    x = torch.arange(inside_window.shape[-1], device=inside_window.device)
    inside = inside_window.clone()
    for j in range(lo.shape[-1]):
        inside |= (x >= lo[..., j, None]) & (x <= hi[..., j, None]) & live[..., j, None]
    return inside


@torch.no_grad()
def candidate_mass(probs: torch.Tensor, cand) -> torch.Tensor:
    """[B, H_q, R, N]: the dense probability `probs` ([B, H_q, R, K]) inside each candidate's span (0 for invalid
    candidates), summed in float64 so that a small span's mass is not lost to rounding."""
    cum = torch.nn.functional.pad(probs.double().cumsum(-1), (1, 0))  # [B, H, R, K + 1]
    n_keys = cum.shape[-1] - 1
    hi_idx = (cand.hi + 1).clamp(0, n_keys)[:, None].expand(-1, probs.shape[1], -1, -1)
    lo_idx = cand.lo.clamp(0, n_keys)[:, None].expand_as(hi_idx)
    mass = (cum.gather(-1, hi_idx) - cum.gather(-1, lo_idx)).clamp_min(0.0)
    return mass * (cand.valid & (cand.hi >= cand.lo))[:, None]


@torch.no_grad()
def dense_probs(qb, kf, pos, first, scale, window, group):
    """Dense causal softmax of the sampled rows over keys 0..max(pos): probs [B, H_q, R, K], the window's keys
    (bool [B, H_q, R, K]) and the rows beyond the window (bool [B, R])."""
    n_keys = int(pos.max()) + 1
    keys = kf[:, :, :n_keys].repeat_interleave(group, dim=1)
    logits = torch.einsum("bhrd,bhkd->bhrk", qb, keys) * scale
    x = torch.arange(n_keys, device=qb.device)
    visible = (x[None, None, :] <= pos[None, :, None]) & (x[None, None, :] >= first[:, None, None])  # [B, R, K]
    logits = logits.masked_fill(~visible[:, None], torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1) * visible[:, None]
    win_lo = torch.maximum(pos[None, :] - window + 1, first[:, None])  # [B, R]
    inside_window = (x >= win_lo[:, :, None]) & (x <= pos[None, :, None])
    valid = (pos[None, :] + 1 - first[:, None]) > window + 1
    return probs, inside_window[:, None].expand(-1, qb.shape[1], -1, -1), valid


def _kl_rows(probs, q_search, kf, pos, first, config, group):
    """KL(span-mass target || softmax of router scores) per [B, H_q, R]."""
    t = pos[None, :] + 1 - first[:, None]  # [B, R]
    batch, heads_q = q_search.shape[:2]
    sg = q_search.float().reshape(batch, heads_q // group, group, *q_search.shape[2:])
    # The candidates and their scores exactly as the attention computes them (anchor or span-mean key).
    cand = candidates(config, sg, kf, pos, t, first[:, None])
    valid = cand.valid  # [B, R, N]
    with torch.no_grad():
        mass = candidate_mass(probs, cand)
        total = mass.sum(-1, keepdim=True)
        target = (mass / total.clamp_min(1e-30)).float()
        has_target = (total[..., 0] > 0).float()
    scores = cand.scores.reshape(batch, heads_q, *cand.anchor.shape)
    scores = scores.masked_fill(~valid[:, None], torch.finfo(scores.dtype).min)
    log_router = torch.log_softmax(scores, dim=-1)
    kl = (torch.xlogy(target, target) - target * log_router).sum(-1)
    return kl * has_target


_LOSS_CHUNK = 4096  # sequence positions per cross-entropy chunk


def _chunk_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over each row's labelled positions of one chunk: [B]."""
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                             ignore_index=IGNORE, reduction="none")
    return loss.view(targets.shape).sum(1)


def _chunk_distill(logits: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """KL(teacher || model) of the next-token distributions at `temperature`, times its square, summed over each
    row's labelled positions of one chunk: [B]."""
    model_log = torch.log_softmax(logits.float() / temperature, dim=-1)
    teacher_log = torch.log_softmax(teacher.float() / temperature, dim=-1)
    kl = (teacher_log.exp() * (teacher_log - model_log)).sum(-1) * temperature ** 2
    return (kl * (targets != IGNORE)).sum(1)


def _chunked_sums(per_chunk, targets: torch.Tensor, *pieces: torch.Tensor, heads=()) -> torch.Tensor:
    """`per_chunk(*chunks of pieces, chunk of targets)` summed over sequence chunks of _LOSS_CHUNK positions, each
    recomputed in backward, so a long sequence never holds a float32 copy of all its logits (32K positions x a
    128K vocabulary would be 16 GiB): [B] in float32. `heads`, one per piece (None: the piece is logits), map a
    chunk of a piece to its logits inside the chunk (`logits.apply_head`), so that the logits of the whole
    sequence never exist at all."""
    if any(head is not None for head in heads):
        per_chunk = functools.partial(_heads_then, per_chunk, tuple(heads))
    total = targets.new_zeros(targets.shape[0], dtype=torch.float32)
    for start in range(0, targets.shape[1], _LOSS_CHUNK):
        chunks = [piece[:, start:start + _LOSS_CHUNK] for piece in pieces]
        goal = targets[:, start:start + _LOSS_CHUNK]
        if torch.is_grad_enabled() and any(chunk.requires_grad for chunk in chunks):
            total = total + checkpoint(per_chunk, *chunks, goal, use_reentrant=False)
        else:
            total = total + per_chunk(*chunks, goal)
    return total


def _heads_then(per_chunk, heads, *args):
    *chunks, goal = args
    return per_chunk(*[chunk if head is None else head(chunk) for head, chunk in zip(heads, chunks)], goal)


def next_token_sums(logits: torch.Tensor, labels: torch.Tensor, head=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence next-token cross-entropy, summed over its labelled positions, in float32, and their counts.

    `logits` [B, L, V]; with `head` (`logits.chunked_head`), the states of a forward whose head was bypassed,
    which `head` maps to logits a chunk at a time. Returns (sums [B], counts [B]), in sequence chunks
    (`_chunked_sums`).
    """
    targets = labels[:, 1:]
    return _chunked_sums(_chunk_loss, targets, logits[:, :-1], heads=(head,)), (targets != IGNORE).sum(1)


def distill_sums(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 temperature: float = 1.0, head=None, teacher_head=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence KL(teacher || model) of the next-token distributions, summed over the positions the next-token
    loss reads (labelled), in float32, and their counts, as `next_token_sums` returns them.

    The teacher is the dense model the converted one was made from, on the same tokens: at an answer token it
    gives the whole distribution over the values it would write, not only the one in the labels (at a multivalue
    answer, the values not yet written). Softened by `temperature` and scaled by its square (so the gradient's
    size does not depend on it); only `logits` carries a gradient. `head` / `teacher_head`: as in
    `next_token_sums`, for either side.
    """
    targets = labels[:, 1:]
    per_chunk = functools.partial(_chunk_distill, temperature=temperature)
    sums = _chunked_sums(per_chunk, targets, logits[:, :-1], teacher_logits[:, :-1].detach(),
                         heads=(head, teacher_head))
    return sums, (targets != IGNORE).sum(1)


def average_loss(sums: torch.Tensor, counts: torch.Tensor, average: str = "token") -> torch.Tensor:
    """The batch loss from `next_token_sums`, averaged as `average` says (recipe.LM_AVERAGES: token or sample)."""
    if average == "token":
        return sums.sum() / counts.sum().clamp_min(1)
    labelled = counts > 0
    per_sample = sums / counts.clamp_min(1)
    return (per_sample * labelled).sum() / labelled.sum().clamp_min(1)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, average: str = "token") -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions, in float32 (see `average_loss`)."""
    return average_loss(*next_token_sums(logits, labels), average)
