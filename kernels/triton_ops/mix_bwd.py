"""The backward's per-row math between its attention passes, two launches in all.

With g the gate, lse_j the joint log-sum-exp of span j with the window and dg_j = dOut . O_j (`function`'s
docstring derives them):

- `prep`, before the span dq pass: ``dow = dOut . o_w`` per row, ``lse_j = logaddexp(lse_s_j, lse_w)`` (0 where span
  j is unused) and dow once per span (the fused span dq's delta); or, given the forward's span outputs, ``dOut .
  o_s_j`` per span (0 where unused), the span part `mix` takes without a fused pass.
- `mix`, after it, from ``span_part_j``: with the fused span dq ``sum p (dp - dow)`` over span j, so
  ``dg_j = dow + span_part_j``; with the older two walks ``dOut . o_s_j``, so ``dg_j = (1 - w_j) dow + w_j
  span_part_j``, ``w_j = sigmoid(lse_s_j - lse_w)``. Then the gate's score gradient ``ds_j = g_j (dg_j - sum_i g_i
  dg_i)``, the span list's delta ``g_j dg_j``, and the window's, shared by the k joint softmaxes: ``lse_eff = -log
  sum_j g_j exp(-lse_j)`` and ``delta_eff = sum_j softmax_j(log g_j - lse_j) dg_j`` (lse_w and dow where the row has
  no span). With `fold`, also the span list's values for a dk/dv kernel that takes its coefficient folded in:
  ``lse_j - ln g_j`` and ``dg_j`` (``-NEG_BIG`` and 0 where g_j = 0: nothing added); `fold_coefficient` is that
  rule in torch, for a dk/dv call given a coefficient apart.

Written with torch operations these were about 50 launches a backward (each a pass over [B, H_q, L, k] floats: about
3 ms of GPU time at 256K, and host time between the passes at 16K; benchmarks/NOTES.md item 43).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import NEG_BIG, interpreting, next_pow2

__all__ = ["prep", "mix", "fold_coefficient"]


@triton.jit
def _prep_kernel(DO, OW, SPAN_O, LSE_S, LSE_W, VALID, DOW, LSE_J, PER_SPAN, n_rows,
                 D: tl.constexpr, KS: tl.constexpr, KP: tl.constexpr, BR: tl.constexpr, PARTS: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    rmask = r < n_rows
    r64 = r.to(tl.int64)
    offs = r64[:, None] * D + tl.arange(0, D)[None, :]
    do = tl.load(DO + offs, mask=rmask[:, None], other=0.0).to(tl.float32)
    ow = tl.load(OW + offs, mask=rmask[:, None], other=0.0).to(tl.float32)
    dow = tl.sum(do * ow, axis=1)
    tl.store(DOW + r, dow, mask=rmask)
    j = tl.arange(0, KP)
    ent = r64[:, None] * KS + j[None, :]
    emask = rmask[:, None] & (j[None, :] < KS)
    lse_s = tl.load(LSE_S + ent, mask=emask, other=0.0)
    valid = tl.load(VALID + ent, mask=emask, other=0) != 0
    lse_w = tl.load(LSE_W + r, mask=rmask, other=0.0)[:, None]
    top = tl.maximum(lse_s, lse_w)
    lse_j = top + tl.log(1.0 + tl.exp(tl.minimum(lse_s, lse_w) - top))
    tl.store(LSE_J + ent, tl.where(valid, lse_j, 0.0), mask=emask)
    if PARTS:  # dOut . o_s_j; an unused span's o_s was never written, so it is selected away
        for jj in tl.static_range(KS):
            sid = r64 * KS + jj
            o_s = tl.load(SPAN_O + sid[:, None] * D + tl.arange(0, D)[None, :], mask=rmask[:, None], other=0.0)
            used = tl.load(VALID + sid, mask=rmask, other=0) != 0
            tl.store(PER_SPAN + sid, tl.where(used, tl.sum(do * o_s.to(tl.float32), axis=1), 0.0), mask=rmask)
    else:
        tl.store(PER_SPAN + ent, tl.broadcast_to(dow[:, None], (BR, KP)), mask=emask)


def prep(do: torch.Tensor, o_w: torch.Tensor, lse_s: torch.Tensor, lse_w: torch.Tensor, valid: torch.Tensor,
         span_o: torch.Tensor | None = None):
    """(dow [B, H_q, L], lse_j [B, H_q, L, k], per span [B, H_q, L, k]), float32, from contiguous dOut and o_w
    (and the forward's span outputs [B, H_q, L, k, D]). Per span: dow, the fused span dq's delta; with `span_o`,
    ``dOut . o_s_j``, the span part of `mix` (fused=False)."""
    n_rows, ks, dim = lse_w.numel(), lse_s.shape[-1], do.shape[-1]
    dow = torch.empty(lse_w.shape, dtype=torch.float32, device=do.device)
    lse_j = torch.empty(lse_s.shape, dtype=torch.float32, device=do.device)
    per_span = torch.empty(lse_s.shape, dtype=torch.float32, device=do.device)
    block_r = 16 if interpreting() else 64
    _prep_kernel[(triton.cdiv(n_rows, block_r),)](
        do, o_w, o_w if span_o is None else span_o, lse_s, lse_w, valid.view(torch.int8), dow, lse_j, per_span,
        n_rows, D=dim, KS=ks, KP=max(next_pow2(ks), 2), BR=block_r, PARTS=span_o is not None,
        num_warps=4 if not interpreting() else 1,
    )
    return dow, lse_j, per_span


@triton.jit
def _mix_kernel(SPAN_PART, DOW, GATE, VALID, LSE_J, LSE_S, LSE_W,
                DS, SPAN_DELTA, LSE_EFF, DELTA_EFF, LSE_FOLD, DG_FOLD, n_rows,
                KS: tl.constexpr, KP: tl.constexpr, BR: tl.constexpr, FUSED: tl.constexpr, FOLD: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    rmask = r < n_rows
    r64 = r.to(tl.int64)
    j = tl.arange(0, KP)
    ent = r64[:, None] * KS + j[None, :]
    emask = rmask[:, None] & (j[None, :] < KS)
    valid = (tl.load(VALID + ent, mask=emask, other=0) != 0) & emask
    gate = tl.load(GATE + ent, mask=emask, other=0.0)
    part = tl.load(SPAN_PART + ent, mask=emask, other=0.0)
    lse_j = tl.load(LSE_J + ent, mask=emask, other=0.0)
    dow = tl.load(DOW + r, mask=rmask, other=0.0)
    lse_w = tl.load(LSE_W + r, mask=rmask, other=0.0)
    if FUSED:
        dg = dow[:, None] + part
    else:
        lse_s = tl.load(LSE_S + ent, mask=emask, other=0.0)
        w = 1.0 / (1.0 + tl.exp(lse_w[:, None] - lse_s))
        dg = (1.0 - w) * dow[:, None] + w * part
    dg = tl.where(valid, dg, 0.0)
    gdg = gate * dg
    ds = gate * (dg - tl.sum(gdg, axis=1)[:, None])
    tl.store(DS + ent, ds, mask=emask)
    tl.store(SPAN_DELTA + ent, gdg, mask=emask)
    any_span = tl.max(valid.to(tl.int32), axis=1) > 0
    logit = tl.where(valid, tl.log(tl.maximum(gate, 1e-38)) - lse_j, float("-inf"))
    top = tl.where(any_span, tl.max(logit, axis=1), 0.0)
    e = tl.where(valid, tl.exp(logit - top[:, None]), 0.0)
    total = tl.where(any_span, tl.sum(e, axis=1), 1.0)
    lse_eff = tl.where(any_span, -(top + tl.log(total)), lse_w)
    delta_eff = tl.where(any_span, tl.sum(e * dg, axis=1) / total, dow)
    tl.store(LSE_EFF + r, lse_eff, mask=rmask)
    tl.store(DELTA_EFF + r, delta_eff, mask=rmask)
    if FOLD:
        has = gate > 0
        tl.store(LSE_FOLD + ent, tl.where(has, lse_j - tl.log(tl.where(has, gate, 1.0)), -NEG_BIG), mask=emask)
        tl.store(DG_FOLD + ent, tl.where(has, dg, 0.0), mask=emask)


def mix(span_part, dow, gate, valid, lse_j, lse_s, lse_w, fused: bool = True, fold: bool = False) -> dict:
    """The per-row values after the span dq pass (module docstring), float32: `ds` and `span_delta` per span,
    `lse_eff` and `delta_eff` [B, H_q, L, 1] for the window, and with `fold` the span list's folded `lse_fold` and
    `dg_fold`."""
    n_rows, ks = lse_w.numel(), gate.shape[-1]

    def per_span():
        return torch.empty(gate.shape, dtype=torch.float32, device=gate.device)

    out = dict(ds=per_span(), span_delta=per_span(),
               lse_eff=torch.empty(*lse_w.shape, 1, dtype=torch.float32, device=gate.device),
               delta_eff=torch.empty(*lse_w.shape, 1, dtype=torch.float32, device=gate.device))
    if fold:
        out.update(lse_fold=per_span(), dg_fold=per_span())
    block_r = 16 if interpreting() else 128
    _mix_kernel[(triton.cdiv(n_rows, block_r),)](
        span_part, dow, gate, valid.view(torch.int8), lse_j, lse_s, lse_w,
        out["ds"], out["span_delta"], out["lse_eff"], out["delta_eff"], out.get("lse_fold", gate),
        out.get("dg_fold", gate), n_rows,
        KS=ks, KP=max(next_pow2(ks), 2), BR=block_r, FUSED=fused, FOLD=fold, num_warps=4 if not interpreting() else 1,
    )
    return out


def fold_coefficient(lse: torch.Tensor, coef: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`mix`'s fold in torch, for a dk/dv call given its coefficient c apart (the `tl` kernel's arguments): ``(lse
    - ln c, delta / c)``, so that ``p c = exp(s - (lse - ln c))`` and ``c dp - delta = c (dp - delta / c)``; where
    c = 0, ``(-NEG_BIG, 0)``: nothing added. Contiguous float32."""
    has = coef > 0
    safe = torch.where(has, coef, 1.0)
    return (torch.where(has, lse - torch.log(safe), -NEG_BIG.value).contiguous(),
            torch.where(has, delta / safe, 0.0).contiguous())
