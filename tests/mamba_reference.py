"""References for the fast Mamba-2 path's tests (slconvert.fast_mamba).

* `TorchOps`: fla-core's four calls as slconvert.fast_mamba uses them (chunked GLA with a scalar decay per
  head, causal conv1d with states, its one-token update, gated RMSNorm), written as plain PyTorch loops with
  the same call conventions. With it installed as the ops, the whole Mamba-2 -> GLA mapping runs on the CPU;
  the GPU tests run the same checks on fla's kernels.
* `ssd_reference`: the Mamba-2 recurrence token by token in float64, in Mamba-2's own terms.
* `transformers_fallback`: a context manager that points a modeling module's kernel functions back at
  transformers' PyTorch implementations, so one process compares both paths on the same model.
* `compare_model`: logits, gradients and cache states of a tiny model with the fast path and with the fallback.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys

import torch
import torch.nn.functional as F

INF = float("inf")


class TorchOps:
    """fla's ops (as slconvert.fast_mamba calls them) in naive PyTorch, for any device."""

    def applies(self, tensor):
        return True

    def gla(self, q, k, v, g, initial_state, output_final_state, cu_seqlens):
        batch, length, heads, dk = q.shape
        dv = v.shape[-1]
        if cu_seqlens is None:
            spans = [(b, 0, length) for b in range(batch)]
        else:
            assert batch == 1
            bounds = cu_seqlens.tolist()
            spans = [(0, s, e) for s, e in zip(bounds[:-1], bounds[1:])]
        rows = [[None] * length for _ in range(batch)]
        finals = []
        for n, (b, start, end) in enumerate(spans):
            state = (initial_state[n].float() if initial_state is not None
                     else q.new_zeros(heads, dv, dk, dtype=torch.float32))
            for t in range(start, end):
                state = (state * g[b, t].float().exp()[:, None, None]
                         + v[b, t].float()[:, :, None] * k[b, t].float()[:, None, :])
                rows[b][t] = (state * q[b, t].float()[:, None, :]).sum(-1)
            finals.append(state)
        o = torch.stack([torch.stack(r) for r in rows]).to(q.dtype)
        return o, (torch.stack(finals) if output_final_state else None)

    def conv(self, x, weight, bias, activation, initial_state, output_final_state, cu_seqlens):
        batch, length, dim = x.shape
        width = weight.shape[-1]
        if cu_seqlens is None:
            spans = [(b, 0, length) for b in range(batch)]
        else:
            bounds = cu_seqlens.tolist()
            spans = [(0, s, e) for s, e in zip(bounds[:-1], bounds[1:])]
        outs = [[] for _ in range(batch)]
        finals = []
        for n, (b, start, end) in enumerate(spans):
            seq = x[b, start:end].t().float()  # (dim, len)
            past = (initial_state[n, :, 1:].float() if initial_state is not None
                    else seq.new_zeros(dim, width - 1))
            full = torch.cat([past, seq], dim=-1)
            y = F.conv1d(full[None], weight.float().unsqueeze(1), bias.float() if bias is not None else None,
                         groups=dim)[0]
            if activation in ("silu", "swish"):
                y = F.silu(y)
            outs[b].append(y.t())
            finals.append(torch.cat([past.new_zeros(dim, 1), full], dim=-1)[:, -width:])
        y = torch.stack([torch.cat(o) for o in outs]).to(x.dtype)
        return y, (torch.stack(finals).to(x.dtype) if output_final_state else None)

    def conv_update(self, x, cache, weight, bias, activation):
        cache.copy_(torch.cat([cache[..., 1:], x.unsqueeze(-1).to(cache.dtype)], dim=-1))
        y = (cache.float() * weight.float()).sum(-1)
        if bias is not None:
            y = y + bias.float()
        if activation in ("silu", "swish"):
            y = F.silu(y)
        return y.to(x.dtype)

    def rmsnorm_gated(self, x, weight, z, eps, group_size, norm_before_gate):
        return torch_rmsnorm_gated(x, weight, z, eps, group_size, norm_before_gate)


def torch_rmsnorm_gated(x, weight, z, eps, group_size, norm_before_gate):
    """fla's gated RMSNorm in float32: the gate before the norm, or after it with `norm_before_gate`."""
    dtype = x.dtype
    x = x.float()
    if z is not None and not norm_before_gate:
        x = x * F.silu(z.float())
    grouped = x.unflatten(-1, (-1, group_size))
    y = (grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2) * weight.float()
    if z is not None and norm_before_gate:
        y = y * F.silu(z.float())
    return y.to(dtype)


def ssd_reference(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                  dt_softplus=False, dt_limit=(0.0, INF)):
    """Mamba-2 token by token in float64: h = exp(dt A) h + dt x B^T, y = h C + D x (then * silu(z)).

    A row's initial state starts its first sequence; seq_idx resets the state where it changes.
    Returns (y in float64, final states (batch, heads, headdim, dstate) in float64)."""
    batch, length, heads, headdim = x.shape
    groups, dstate = B.shape[2], B.shape[3]
    dt = dt.double()
    if dt_bias is not None:
        dt = dt + dt_bias.double()
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt.clamp(dt_limit[0], dt_limit[1])
    per = heads // groups
    ys, finals = [], []
    for b in range(batch):
        h = (initial_states[b].double() if initial_states is not None
             else x.new_zeros(heads, headdim, dstate, dtype=torch.float64))
        row = []
        for t in range(length):
            if seq_idx is not None and t > 0 and seq_idx[b, t] != seq_idx[b, t - 1]:
                h = torch.zeros_like(h)
            Bt = B[b, t].double().repeat_interleave(per, 0)  # (heads, dstate)
            Ct = C[b, t].double().repeat_interleave(per, 0)
            decay = torch.exp(dt[b, t] * A.double())  # (heads,)
            h = h * decay[:, None, None] + (dt[b, t][:, None] * x[b, t].double())[:, :, None] * Bt[:, None, :]
            y = (h * Ct[:, None, :]).sum(-1)
            if D is not None:
                y = y + x[b, t].double() * (D.double()[:, None] if D.dim() == 1 else D.double())
            if z is not None:
                y = y * F.silu(z[b, t].double())
            row.append(y)
        ys.append(torch.stack(row))
        finals.append(h)
    return torch.stack(ys), torch.stack(finals)


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def transformers_fallback(*modules):
    """`fast_mamba.transformers_torch`, checking that the fast path is not called meanwhile (a fallback that kept it
    would compare the fast path with itself)."""
    from slconvert import fast_mamba

    before = dict(fast_mamba.CALLS)
    with fast_mamba.transformers_torch(*modules):
        yield
    assert dict(fast_mamba.CALLS) == before, f"the fast path ran inside the fallback: {before} -> {fast_mamba.CALLS}"


def hooked_modules(model):
    """The modeling modules of the model's classes that hold hooked kernel functions."""
    from slconvert import fast_mamba

    found = []
    for sub in model.modules():
        module = sys.modules.get(type(sub).__module__)
        if module is not None and module not in found and any(hasattr(module, n) for n in fast_mamba.HOOKED):
            found.append(module)
    return found


@torch.no_grad()
def stir(model, seed=0):
    """Give the Mamba layers time steps of order one: the stock initialisation's dt of 0.001-0.1 leaves the
    scan's contribution below float32 rounding of the D skip, which would hide errors in it."""
    g = torch.Generator().manual_seed(seed)
    for sub in model.modules():
        bias = getattr(sub, "dt_bias", None)
        if bias is None and hasattr(sub, "dt_proj") and hasattr(sub, "A_log"):
            bias = sub.dt_proj.bias  # Mamba-1 (Jamba)
        if isinstance(bias, torch.nn.Parameter):
            bias.copy_(torch.rand(bias.shape, generator=g) * 2 - 1)


def _cache_kw(model):
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _run(model, ids, cache=None):
    kwargs = {"input_ids": ids, "use_cache": True}
    if cache is not None:
        kwargs[_cache_kw(model)] = cache
    out = model(**kwargs)
    new = getattr(out, "cache", None)
    return out.logits, (new if new is not None else out.past_key_values)


def state_tensors(cache) -> list[torch.Tensor]:
    """The conv and recurrent states of a hybrid cache (transformers 5.17 and later)."""
    found = []
    for layer in getattr(cache, "layers", []):
        for attr in ("conv_states", "recurrent_states"):
            value = getattr(layer, attr, None)
            values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            found += [t for t in values if isinstance(t, torch.Tensor)]
    return found


def _mixers(model):
    """The token mixers that call the hooked kernels: modules holding a depthwise causal Conv1d."""
    return [m for m in model.modules()
            if any(isinstance(getattr(m, a, None), torch.nn.Conv1d) for a in ("conv1d", "conv"))]


@contextlib.contextmanager
def _recording(model, store):
    def hook(module, args, output):
        store.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    handles = [m.register_forward_hook(hook) for m in _mixers(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _forward_suite(model, ids, chunks, decode):
    """Whole-sequence logits; logits of a chunked prefill through the cache, then one-token decode steps;
    cache states after each; the output of every mixer call along the way."""
    model.eval()
    mixed = []
    with torch.no_grad(), _recording(model, mixed):
        whole, _ = _run(model, ids)
        cache, pieces, start = None, [], 0
        for size in chunks:
            logits, cache = _run(model, ids[:, start:start + size], cache)
            pieces.append(logits)
            start += size
        prefill_states = [s.clone() for s in state_tensors(cache)]
        steps = []
        for t in range(decode):
            logits, cache = _run(model, ids[:, start + t:start + t + 1], cache)
            steps.append(logits)
        decode_states = [s.clone() for s in state_tensors(cache)]
    return whole, torch.cat(pieces, 1), torch.cat(steps, 1), prefill_states, decode_states, mixed


def _grads(model, ids):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.eval()
    return out.loss.detach(), grads


def _errors(a, b, length, grads_a=None, grads_b=None) -> dict:
    out = {
        "logits": rel(a[0], b[0]),
        "prefill": rel(a[1], b[1]),
        "decode": rel(a[2], b[2]),
        "states": max([rel(x, y) for x, y in zip(a[3] + a[4], b[3] + b[4])], default=math.nan),
        "mixers": max([rel(x, y) for x, y in zip(a[5], b[5])], default=math.nan),
    }
    if grads_a is not None and grads_b is not None:
        (loss_a, ga), (loss_b, gb) = grads_a, grads_b
        assert ga.keys() == gb.keys()
        live = [n for n in gb if gb[n].norm() > 0]
        out["loss"] = rel(loss_a, loss_b)
        out["grads"] = max(rel(ga[n], gb[n]) for n in live)
        out["worst_grad"] = max(live, key=lambda n: rel(ga[n], gb[n]))
    return out


def compare_model(model_type, device, dtype, *, length=40, chunks=(17, 23), decode=4, grads=True, seed=0,
                  truth=False):
    """Relative errors, fast path vs transformers' fallback, of a tiny `model_type` model in `dtype`.

    Returns a dict: logits (whole sequence), mixers (the output of each mixer call: the largest error),
    prefill (chunked through the cache), decode (one-token steps after it), states (conv and recurrent states
    after the prefill and after decoding: the largest error), loss and grads (training mode: the loss, and the
    largest error over parameter gradients, at worst_grad); prefill_vs_whole: the fast path's chunked prefill
    against its own whole-sequence logits (fallback_prefill_vs_whole: the same for the fallback, for models
    whose transformers code does not chunk exactly). grads_skipped: why gradients could not be taken.
    truth=True also runs the fallback on a float32 copy: fast_vs_truth and fallback_vs_truth hold the same
    errors of each path against it (for low-precision dtypes, where the two paths round differently).
    """
    import copy

    from transformers import AutoModelForCausalLM

    from slconvert.tiny import tiny_config

    torch.manual_seed(seed)
    config = tiny_config(model_type)
    master = AutoModelForCausalLM.from_config(config)
    stir(master)
    model = copy.deepcopy(master).to(device=device, dtype=dtype)
    modules = hooked_modules(model)
    ids = torch.randint(4, config.vocab_size, (2, length + decode), device=device)
    assert sum(chunks) == length

    def gradients(m, fallback):
        with transformers_fallback(*modules) if fallback else contextlib.nullcontext():
            return _grads(m, ids)

    fast = _forward_suite(model, ids, chunks, decode)
    with transformers_fallback(*modules):
        slow = _forward_suite(model, ids, chunks, decode)
    g_fast = g_slow = None
    skipped = None
    if grads:
        try:
            g_fast, g_slow = gradients(model, False), gradients(model, True)
        except RuntimeError as err:  # e.g. fla refusing a backward on this GPU / Triton (gated delta rule)
            skipped = str(err).strip().splitlines()[0][:300]
    result = _errors(fast, slow, length, g_fast, g_slow)
    result.update(prefill_vs_whole=rel(fast[1], fast[0][:, :length]),
                  fallback_prefill_vs_whole=rel(slow[1], slow[0][:, :length]),
                  state_count=len(fast[3]), mixer_calls=len(fast[5]))
    if skipped:
        result["grads_skipped"] = skipped
    if truth:
        reference = master.to(device=device, dtype=torch.float32)
        with transformers_fallback(*modules):
            exact = _forward_suite(reference, ids, chunks, decode)
        g_exact = gradients(reference, True) if g_fast is not None else None
        result["fast_vs_truth"] = _errors(fast, exact, length, g_fast, g_exact)
        result["fallback_vs_truth"] = _errors(slow, exact, length, g_slow, g_exact)
    return result
