"""The entry kernel: softmax attention of a tile of entries (query row, head, key range) over its keys.

One program takes BM consecutive sorted entries of one (batch, kv-head) group, gathers their query rows
and walks the union of their key ranges in blocks of BN keys, masking each entry to its own range. Key and
value blocks come through tensor descriptors (bulk tensor copies) when K and V are contiguous 16-bit
tensors: 10% off the forward at 256K on an H200. Five modes share that loop:

- FWD_SPAN (first): online softmax over one span; stores the span's normalised o_s (in the query's dtype)
  and lse_s per entry. A row's k spans sit in different tiles, so they meet in the window pass.
- FWD_WINDOW (last): online softmax over the window, then the semantics' mix of the row's spans, each joined
  with the window through the log-sum-exps: ``out = o_w + sum_j gate_j w_j (o_s_j - o_w)`` with
  ``w_j = sigmoid(lse_s_j - lse_w)``, stored once in the query's dtype. Stores o_w and lse_w too when the
  backward needs them. (Spans first means no float32 accumulator, no atomics and no final cast.)
- DELTA (backward): ``u = dOut . o_s`` per span, re-walking the span with the stored lse_s.
- DQ (backward): dq of every entry with its own lse, output-gradient coefficient c and delta,
  ``dz = p * (c * dOut . v - delta)``, added atomically into a float32 dq; or, for the window list (every
  row once, the last pass to touch dq), added to it and stored in the query's dtype.
- DQ_SPAN (backward): the span's dq and the gradient of its gate in one walk, replacing DELTA + DQ. With p
  the joint probabilities over the span's keys (they sum to w), dp = dOut . v and c = dOut . o_w (host), the
  span's ``dOut . O_j`` is ``dg = c + sum p (dp - c)`` and its dq is ``scale g (A - (dg - c) B)`` with
  ``A = sum p (dp - c) k`` and ``B = sum p k``: two accumulators instead of a second walk. Centring dp on c
  keeps the subtraction exact when dOut . v has a large part common to all keys. Stores ``sum p (dp - c)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # older Triton: plain loads only
    TensorDescriptor = None

from .common import (
    LN2,
    LOG2E,
    MODE_DELTA,
    MODE_DQ,
    MODE_DQ_SPAN,
    MODE_FWD_SPAN,
    MODE_FWD_WINDOW,
    NEG_BIG,
    dot_precision,
    entry_rows,
    interpreting,
    launch_tiles,
    mode_value,
    rows_flat,
)
from .entries import EntryList

# (the modes are defined in common.py and exported here with the kernel they select a pass of)
__all__ = ["MODE_FWD_WINDOW", "MODE_FWD_SPAN", "MODE_DELTA", "MODE_DQ", "MODE_DQ_SPAN", "run_entries"]

# "off" keeps plain loads everywhere (for same-run comparisons, benchmarks/compare_passes.py).
DESCRIPTORS = ["on"]



@triton.jit
def _entry_kernel(
    Q, K, V, DO, K_DESC, V_DESC,
    ENT_ID, ENT_LO, ENT_HI, ENT_COUNT, ent_stride,
    OW, LSEW, SPAN_O, OUT, GATE, LSE_IN, COEF, DELTA, OUT_E, DQ, DQ_OUT,
    sqb, sqh, sql, sqd,
    skb, skh, skl, skd,
    svb, svh, svl, svd,
    H_Q, H_KV, L_Q, L_KV, sm_scale,
    NJ: tl.constexpr, MODE: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr, USE_DESC: tl.constexpr, Q_ROWS: tl.constexpr, DQ_FINAL: tl.constexpr,
    STORE_OW: tl.constexpr, STORE_OUT: tl.constexpr, KS: tl.constexpr, OUT_AT_Q: tl.constexpr,
):
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    count = tl.load(ENT_COUNT + grp)
    start = pid * BM
    if start < count:
        b = grp // H_KV
        kv = grp % H_KV
        idx = start + tl.arange(0, BM)
        emask = idx < count
        base = grp.to(tl.int64) * ent_stride
        ent = tl.load(ENT_ID + base + idx, mask=emask, other=0)
        lo = tl.load(ENT_LO + base + idx, mask=emask, other=1)
        hi = tl.load(ENT_HI + base + idx, mask=emask, other=0)
        real = emask & (lo <= hi)
        offs_d = tl.arange(0, D)
        # row_flat: (b, h, r) in [B, H_q, L_q]; ent_flat: (b, h, r, j) in [B, H_q, L_q, NJ]
        q_off, row_flat, ent_flat = entry_rows(ent, b, sqb, sqh, sql, sqd, offs_d, H_Q, L_Q, NJ, Q_ROWS)
        q = tl.load(Q + q_off, mask=emask[:, None], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        k_base = K + b.to(tl.int64) * skb + kv.to(tl.int64) * skh
        v_base = V + b.to(tl.int64) * svb + kv.to(tl.int64) * svh
        kstart = tl.min(tl.where(real, lo, 1 << 30), axis=0)  # no real entry: an empty loop, no overflow
        kend = tl.max(tl.where(real, hi, -1), axis=0)
        # Keys every stored entry of the tile attends: blocks inside [inner_lo, inner_hi] skip the range mask
        # (an empty entry makes the interval empty, so every block keeps the mask).
        inner_lo = tl.max(tl.where(emask, lo, -1), axis=0)
        inner_hi = tl.min(tl.where(emask, hi, 1 << 30), axis=0)
        qk_scale = sm_scale * LOG2E

        if MODE == MODE_FWD_WINDOW or MODE == MODE_FWD_SPAN:
            m_i = tl.full([BM], NEG_BIG, tl.float32)
            l_i = tl.zeros([BM], tl.float32)
            acc = tl.zeros([BM, D], tl.float32)
        else:
            lse2 = tl.load(LSE_IN + ent_flat, mask=emask, other=0.0) * LOG2E
            do = tl.load(DO + row_flat[:, None] * D + offs_d[None, :], mask=emask[:, None], other=0.0)
            if UPCAST:
                do = do.to(tl.float32)
            acc = tl.zeros([BM, D], tl.float32)
            if MODE == MODE_DQ or MODE == MODE_DQ_SPAN:
                coef = tl.load(COEF + ent_flat, mask=emask, other=0.0)
                delta = tl.load(DELTA + ent_flat, mask=emask, other=0.0)
            if MODE == MODE_DQ_SPAN:
                acc_b = tl.zeros([BM, D], tl.float32)
                pdp_sum = tl.zeros([BM], tl.float32)

        row0 = (b * H_KV + kv) * L_KV  # first row of this (batch, kv head) in the flattened [rows, D] view
        for n0 in range(kstart, kend + 1, BN):
            kidx = n0 + tl.arange(0, BN)
            if USE_DESC:
                # bulk tensor copies; rows past kend (even of the next head) are masked out below
                kt = tl.trans(K_DESC.load([row0 + n0, 0]))
                vb = V_DESC.load([row0 + n0, 0])
            else:
                kin = kidx <= kend
                kt = tl.load(k_base + kidx.to(tl.int64)[None, :] * skl + offs_d[:, None] * skd, mask=kin[None, :],
                             other=0.0)
                vb = tl.load(v_base + kidx.to(tl.int64)[:, None] * svl + offs_d[None, :] * svd, mask=kin[:, None],
                             other=0.0)
            if UPCAST:
                kt = kt.to(tl.float32)
                vb = vb.to(tl.float32)
            # raw scores: the scale folds into one multiply-add with the exponent's offset
            s = tl.dot(q, kt, input_precision=PREC)
            if (n0 < inner_lo) | (n0 + BN - 1 > inner_hi):
                inside = (kidx[None, :] >= lo[:, None]) & (kidx[None, :] <= hi[:, None])
                s = tl.where(inside, s, float("-inf"))
            if MODE == MODE_FWD_WINDOW or MODE == MODE_FWD_SPAN:
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                alpha = tl.exp2((m_i - m_new) * qk_scale)
                p = tl.exp2(s * qk_scale - (m_new * qk_scale)[:, None])
                l_i = l_i * alpha + tl.sum(p, axis=1)
                acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=PREC)
                m_i = m_new
            elif MODE == MODE_DELTA:
                p = tl.exp2(s * qk_scale - lse2[:, None])
                acc += tl.dot(p.to(vb.dtype), vb, input_precision=PREC)
            elif MODE == MODE_DQ:
                p = tl.exp2(s * qk_scale - lse2[:, None])
                dp = tl.dot(do, tl.trans(vb), input_precision=PREC)
                dz = p * (coef[:, None] * dp - delta[:, None])
                acc += tl.dot(dz.to(kt.dtype), tl.trans(kt), input_precision=PREC)
            else:
                p = tl.exp2(s * qk_scale - lse2[:, None])
                dp = tl.dot(do, tl.trans(vb), input_precision=PREC)
                pdp = p * (dp - delta[:, None])
                pdp_sum += tl.sum(pdp, axis=1)
                acc += tl.dot(pdp.to(kt.dtype), tl.trans(kt), input_precision=PREC)
                acc_b += tl.dot(p.to(kt.dtype), tl.trans(kt), input_precision=PREC)

        if MODE == MODE_FWD_WINDOW or MODE == MODE_FWD_SPAN:
            has = l_i > 0
            o = acc / tl.where(has, l_i, 1.0)[:, None]
            lse = tl.where(has, (m_i * qk_scale + tl.log2(tl.where(has, l_i, 1.0))) * LN2, NEG_BIG)
            if MODE == MODE_FWD_WINDOW:
                if STORE_OW:
                    tl.store(OW + row_flat[:, None] * D + offs_d[None, :], o.to(OW.dtype.element_ty), mask=emask[:, None])
                    tl.store(LSEW + row_flat, lse, mask=emask)
                res = o
                for j in tl.static_range(KS):  # the row's spans (LSE_IN: their lse_s; unused ones have gate 0)
                    # Three independent loads (no load masked by another's value: one memory round trip). An
                    # unused span's o_s was never written, so it is selected away rather than multiplied by 0.
                    sid = row_flat * KS + j
                    g = tl.load(GATE + sid, mask=emask, other=0.0)
                    lse_s = tl.load(LSE_IN + sid, mask=emask, other=NEG_BIG)
                    o_s = tl.load(SPAN_O + sid[:, None] * D + offs_d[None, :], mask=emask[:, None], other=0.0)
                    w = 1.0 / (1.0 + tl.exp(tl.minimum(lse - lse_s, 80.0)))
                    res += tl.where((g > 0.0)[:, None], (g * w)[:, None] * (o_s.to(tl.float32) - o), 0.0)
                if STORE_OUT:  # OUT_AT_Q: `out` has the query's strides (a chunk's rows of the whole output)
                    out_off = q_off if OUT_AT_Q else row_flat[:, None] * D + offs_d[None, :]
                    tl.store(OUT + out_off, res.to(OUT.dtype.element_ty), mask=emask[:, None])
            else:
                tl.store(SPAN_O + ent_flat[:, None] * D + offs_d[None, :], o.to(SPAN_O.dtype.element_ty),
                         mask=emask[:, None])
                tl.store(OUT_E + ent_flat, lse, mask=emask)
        elif MODE == MODE_DELTA:
            u = tl.sum(acc * do.to(tl.float32), axis=1)
            tl.store(OUT_E + ent_flat, u, mask=emask)
        elif MODE == MODE_DQ:
            dq_ptrs = row_flat[:, None] * D + offs_d[None, :]
            if DQ_FINAL:  # every row once (the window list): finish dq in the query's dtype, no atomics
                dq = tl.load(DQ + dq_ptrs, mask=emask[:, None], other=0.0) + acc * sm_scale
                tl.store(DQ_OUT + dq_ptrs, dq.to(DQ_OUT.dtype.element_ty), mask=emask[:, None])
            else:
                tl.atomic_add(DQ + dq_ptrs, acc * sm_scale, mask=real[:, None], sem="relaxed")
        else:
            dq = (coef * sm_scale)[:, None] * (acc - pdp_sum[:, None] * acc_b)
            tl.atomic_add(DQ + row_flat[:, None] * D + offs_d[None, :], dq, mask=real[:, None], sem="relaxed")
            tl.store(OUT_E + ent_flat, pdp_sum, mask=emask)


def at_query_offsets(out: torch.Tensor, q: torch.Tensor) -> bool:
    """Whether the window forward's `out` is addressed by the query's own element offsets (OUT_AT_Q): it has the
    query's shape and strides, as a chunk's rows of an output laid out as the query (`function.inference_forward`)."""
    return out.shape == q.shape and out.stride() == q.stride()


def uses_descriptors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the entry passes read K and V through tensor descriptors (bulk tensor copies): contiguous, 16-byte
    aligned, 16-bit on a GPU (any dtype under the interpreter, so that CI checks their indexing too)."""
    return (DESCRIPTORS[0] != "off" and TensorDescriptor is not None
            and (interpreting() or q.dtype in (torch.bfloat16, torch.float16))
            and k.is_contiguous() and v.is_contiguous() and k.data_ptr() % 16 == 0 and v.data_ptr() % 16 == 0)


def run_entries(
    mode,
    entries: EntryList,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    do: torch.Tensor | None = None,
    o_w: torch.Tensor | None = None,
    lse_w: torch.Tensor | None = None,
    span_o: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    lse_in: torch.Tensor | None = None,
    coef: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    out_e: torch.Tensor | None = None,
    dq: torch.Tensor | None = None,
    dq_out: torch.Tensor | None = None,
    tiles: tuple[int, ...] | None = None,
) -> None:
    """Launch the entry kernel over every tile of `entries` (buffers not used by `mode` may be None).

    The forward runs MODE_FWD_SPAN first (writing `span_o` and `out_e` = lse_s), then MODE_FWD_WINDOW, which
    reads them back (`span_o`, `gate`, `lse_in` = lse_s) and writes `out`; `o_w`, `lse_w` only when given.

    `dq_out` (MODE_DQ over a list holding every row once, the window's): dq finished in the query's dtype,
    the float32 `dq` holding the other contributions. `mode` is one of the `MODE_*` constants (or its int)."""
    mode = mode_value(mode)
    batch, heads_q, len_q, dim = q.shape
    heads_kv = k.shape[1]
    groups, n_max = entries.eid.shape
    if n_max == 0:
        return
    block_m, block_n, launch = launch_tiles(tiles, dim, mode)
    dummy = q.new_empty(1, dtype=torch.float32)

    def buf(x):
        return dummy if x is None else x

    # `out` (the window forward's output): contiguous, or a view with the query's strides (addressed as q's rows)
    out_at_q = out is not None and at_query_offsets(out, q)
    if out is not None and not (out_at_q or out.is_contiguous()):
        raise ValueError("run_entries: `out` must be contiguous or have the query's strides")
    # the window forward mixes the row's spans into the output when their outputs are given
    spans_per_row = gate.shape[-1] if mode == MODE_FWD_WINDOW and span_o is not None else 0
    grid = (triton.cdiv(n_max, block_m), groups)
    use_desc = uses_descriptors(q, k, v)
    k_desc = TensorDescriptor.from_tensor(k.view(-1, dim), [block_n, dim]) if use_desc else k
    v_desc = TensorDescriptor.from_tensor(v.view(-1, dim), [block_n, dim]) if use_desc else v
    _entry_kernel[grid](
        q, k, v, buf(do), k_desc, v_desc,
        entries.eid, entries.lo, entries.hi, entries.count, entries.eid.stride(0),
        buf(o_w), buf(lse_w), buf(span_o), buf(out), buf(gate), buf(lse_in), buf(coef), buf(delta), buf(out_e),
        buf(dq), buf(dq_out),
        *q.stride(), *k.stride(), *v.stride(),
        heads_q, heads_kv, len_q, k.shape[2], scale,
        NJ=entries.nj, MODE=mode, D=dim, BM=block_m, BN=block_n,
        PREC=dot_precision(q.dtype), UPCAST=interpreting() or q.dtype == torch.float32,
        USE_DESC=use_desc, Q_ROWS=rows_flat(q), DQ_FINAL=dq_out is not None,
        STORE_OW=o_w is not None, STORE_OUT=out is not None, KS=spans_per_row, OUT_AT_Q=out_at_q,
        **launch,
    )


