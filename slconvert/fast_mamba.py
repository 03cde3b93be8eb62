"""A fast Mamba-2 path on CUDA without `mamba-ssm`: the mixers' kernels built on fla-core's Triton ops.

transformers' Mamba-2 mixers (NemotronH, Granite-4 hybrid, Bamba, Falcon-H1, ...) take their kernels through
`transformers.integrations.hub_kernels.use_kernel_func_from_hub_with_fallback`: when a modeling module is
imported, that hook imports `mamba_ssm` and `causal_conv1d` and uses their `mamba_chunk_scan_combined`,
`mamba_split_conv1d_scan_combined`, `selective_state_update`, `causal_conv1d_fn` and `causal_conv1d_update`,
or, when the packages are absent, a PyTorch fallback that is slow and holds about 0.4 GB per 1K tokens per
layer. `mamba-ssm` needs a compiler and network access to install. This module gives the hook the same five
functions (same signatures and semantics) implemented on fla-core (`pip install fla-core`, pure Python):

* the SSD scan is gated linear attention with a scalar decay per head. Per head h, Mamba-2 computes
  S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T and y_t = S_t C_t + D_h x_t; fla's chunked GLA computes
  S_t = exp(g_t) S_{t-1} + v_t k_t^T and o_t = scale S_t q_t. So q = C, k = B (each group's B and C
  repeated over its heads), v = dt * x, g = dt * A, scale = 1, and the state is fla's V-first [N, H, V, K]
  layout, which is Mamba-2's (batch, heads, headdim, dstate). dt's bias, softplus and limits, D and the z
  gate are elementwise PyTorch around the op. `seq_idx` (packed sequences) becomes fla's `cu_seqlens`;
  initial and final states carry chunked prefill through the cache. The op is `chunk_simple_gla`; where its
  backward is known to be wrong (Hopper GPUs with Triton >= 3.4, < 3.7.1: fla refuses it) gradients go
  through `chunk_gla` with the decay repeated over the key dimension, which computes the same thing;
* the depthwise causal convolution is fla's `causal_conv1d` (forward and backward) and, for one decode
  token, fla's `causal_conv1d_update`;
* the fused training path (`mamba_split_conv1d_scan_combined`) is the convolution, the scan, fla's gated
  RMSNorm and the output projection;
* the one-token decode update (`selective_state_update`) is plain PyTorch (one step), for Mamba-2's
  (batch, heads, headdim, dstate) states and Mamba-1's (batch, dim, dstate) ones.

Registration: `install()` (run by `import slconvert` unless SLCONVERT_FAST_MAMBA=0) appends an import
finder that answers transformers' hook, and nothing else, with modules named `mamba_ssm` and `causal_conv1d`
holding these functions, when the real packages are not installed, a CUDA device is present and fla-core
imports. The hook runs when a modeling module is first imported, so that module must be imported after
slconvert. On tensors that are not on a CUDA device the functions run transformers' PyTorch code, so the
CPU keeps transformers' fallback.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import warnings

import torch
import torch.nn.functional as F

__all__ = [
    "ENV_VAR",
    "CALLS",
    "install",
    "status",
    "torch_implementation",
    "transformers_torch",
    "HOOKED",
    "mamba_chunk_scan_combined",
    "mamba_split_conv1d_scan_combined",
    "selective_state_update",
    "causal_conv1d_fn",
    "causal_conv1d_update",
    "runs_fla_on_any_device",
    "warn_if_cpu_cannot_run",
]

ENV_VAR = "SLCONVERT_FAST_MAMBA"
# The module whose hook imports `mamba_ssm` / `causal_conv1d` (transformers >= 5.17).
_HOOK_MODULE = "transformers.integrations.hub_kernels"
_SHIMS = {
    "mamba_ssm": ("mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "selective_state_update"),
    "causal_conv1d": ("causal_conv1d_fn", "causal_conv1d_update"),
}
# The modeling modules' globals that the hook binds (their kernel functions; `transformers_torch`).
HOOKED = ("causal_conv1d_update", "causal_conv1d_fn", "mamba2_split_conv1d_scan_combined",
          "mamba2_selective_state_update", "mamba2_chunk_scan", "mamba_selective_state_update")
# Modeling modules whose mixers take these functions through the hook (a warning names those imported too early).
_MODELING = ("nemotron_h", "granitemoehybrid", "bamba", "falcon_h1", "mamba2", "zamba2", "jamba", "qwen3_next",
             "qwen3_5", "qwen3_5_moe", "lfm2", "lfm2_moe", "olmo_hybrid")
_INF = float("inf")

CALLS: collections.Counter = collections.Counter()  # name -> calls that took the fast path (tests, benchmarks)
_state = {"installed": False, "usable": None, "reason": "", "force": False, "served": [], "noticed": False}
_override = None  # a stand-in for fla's ops (tests run the mapping on the CPU with one)
_fla_ops = None


def enabled() -> bool:
    """False when SLCONVERT_FAST_MAMBA is 0 / false / no / off."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------------------------- fla's ops


class _FlaOps:
    """fla-core's Triton ops behind four calls (the interface a test stand-in implements too)."""

    def __init__(self):
        import triton
        from fla.modules.causal_conv1d import causal_conv1d, causal_conv1d_update
        from fla.modules.norm.layernorm_gated import rmsnorm_fn
        from fla.ops.gla import chunk_gla
        from fla.ops.simple_gla import chunk_simple_gla

        try:  # imported by fla's causal_conv1d on each call; import it now, before a `causal_conv1d` of ours exists
            import fla.modules.causal_conv1d.backends.cuda  # noqa: F401
        except ImportError:
            pass
        self._simple_gla, self._gla = chunk_simple_gla, chunk_gla
        self._conv, self._conv_update, self._rmsnorm = causal_conv1d, causal_conv1d_update, rmsnorm_fn
        try:  # fla's own condition for refusing chunk_simple_gla's backward (a Triton miscompile on Hopper)
            from fla.utils import IS_NVIDIA_HOPPER, TRITON_ABOVE_3_4_0, TRITON_ABOVE_3_7_1

            self._refused = bool(IS_NVIDIA_HOPPER and TRITON_ABOVE_3_4_0 and not TRITON_ABOVE_3_7_1)
        except ImportError:
            version = tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:3] if p.isdigit())
            self._refused = ((3, 4, 0) <= version < (3, 7, 1) and torch.cuda.is_available()
                             and torch.cuda.get_device_capability()[0] == 9)

    @staticmethod
    def applies(tensor: torch.Tensor) -> bool:
        return tensor.is_cuda

    def _simple_backward_broken(self, device: torch.device) -> bool:
        return self._refused

    def gla(self, q, k, v, g, initial_state, output_final_state, cu_seqlens):
        """o[B, T, H, V], final state [N, H, V, K] (float32) of S_t = exp(g_t) S_{t-1} + v_t k_t^T, o_t = S_t q_t."""
        h0 = initial_state.float() if initial_state is not None else None
        training = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (q, k, v, g, initial_state))
        if training and self._simple_backward_broken(q.device):
            gk = g.unsqueeze(-1).expand(*g.shape, k.shape[-1])
            return self._gla(q, k, v, gk, scale=1.0, initial_state=h0, output_final_state=output_final_state,
                             state_v_first=True, cu_seqlens=cu_seqlens)
        return self._simple_gla(q, k, v, g=g, scale=1.0, initial_state=h0, output_final_state=output_final_state,
                                state_v_first=True, cu_seqlens=cu_seqlens)

    def conv(self, x, weight, bias, activation, initial_state, output_final_state, cu_seqlens):
        """Depthwise causal convolution of x[B, T, D]; states are [N, D, W] (column W - 1 the latest input)."""
        return self._conv(x, weight, bias, initial_state=initial_state, output_final_state=output_final_state,
                          activation=activation, backend="triton", cu_seqlens=cu_seqlens)

    def conv_update(self, x, cache, weight, bias, activation):
        """One token x[N, D]: shifts cache[N, D, W] in place and returns the convolution at that token."""
        return self._conv_update(x, cache, weight=weight, bias=bias, activation=activation)[0]

    def rmsnorm_gated(self, x, weight, z, eps, group_size, norm_before_gate):
        return self._rmsnorm(x, weight, None, z=z, eps=eps, group_size=group_size,
                             norm_before_gate=norm_before_gate)


def _fla():
    global _fla_ops
    if _fla_ops is None:
        _fla_ops = _FlaOps()
    return _fla_ops


def _ops_for(tensor: torch.Tensor):
    """The ops that run `tensor`'s computation, or None for transformers' PyTorch code."""
    if _override is not None:
        return _override if _override.applies(tensor) else None
    if not tensor.is_cuda:
        return None
    _tuning_notice()
    return _fla()


# A kernel that every scan runs (fla's chunked state pass): its tuning result in Triton's cache tells whether
# fla's kernels have been tuned on this machine before.
_TUNED_MARK = "chunk_fwd_kernel_h.autotune.json"


def _tuning_notice() -> None:
    """Say once per process, before the first fla kernel runs, that the first steps will be slow, unless
    Triton's cache already holds fla's tuning results (Triton times every candidate configuration of each
    kernel for each dtype and head shape on first use, minutes in all, and keeps the winners on disk)."""
    if _state["noticed"]:
        return
    _state["noticed"] = True
    cache = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    if glob.glob(os.path.join(glob.escape(cache), "*", _TUNED_MARK)):
        return
    warnings.warn("slconvert: fla-core compiles and tunes its Mamba-2 kernels on first use, so the first steps "
                  f"take a few minutes per dtype and head shape; Triton keeps the results in {cache} for later runs",
                  stacklevel=4)


# --------------------------------------------------------------------------------------------- helpers


def _discretize(dt, dt_bias, dt_softplus, dt_limit):
    # float32 math; with a bias the addition promotes to float32 itself (one kernel, not three)
    dt = dt.float() if dt_bias is None else dt_bias.float() + dt
    if dt_softplus:
        dt = F.softplus(dt)  # threshold 20, as mamba-ssm's kernels
    if dt_limit is not None and tuple(dt_limit) != (0.0, _INF):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _heads_per_group(heads: int, groups: int) -> int:
    """Head i reads group i // (heads // groups), as in mamba-ssm."""
    if heads % groups:
        raise ValueError(f"{heads} heads are not a multiple of {groups} groups")
    return heads // groups


def _per_head(t: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    """Groups -> heads along `dim` (`_heads_per_group`), as a copy."""
    per_group = _heads_per_group(heads, t.shape[dim])
    return t if per_group == 1 else t.repeat_interleave(per_group, dim=dim)


class _Segments:
    """Packed sequences of a (batch, length) `seq_idx` as one row: cu_seqlens, each row's first and last one."""

    def __init__(self, seq_idx: torch.Tensor, batch: int, length: int):
        ids = seq_idx.reshape(batch, length)
        starts = torch.ones_like(ids, dtype=torch.bool)
        starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
        starts = starts.reshape(-1)
        positions = starts.nonzero().squeeze(1)
        total = batch * length
        self.cu_seqlens = torch.cat([positions, positions.new_tensor([total])]).to(torch.long)
        segment = torch.cumsum(starts.to(torch.long), 0) - 1
        rows = torch.arange(batch, device=ids.device) * length
        self.first, self.last = segment[rows], segment[rows + length - 1]
        self.count = positions.numel()

    def initial(self, states: torch.Tensor | None) -> torch.Tensor | None:
        """Per-row initial states -> per-segment ones (each row's state starts its first sequence)."""
        if states is None:
            return None
        zeros = states.new_zeros(self.count, *states.shape[1:])
        return zeros.index_copy(0, self.first, states)


def _refuse_packed(name, seq_idx):
    if seq_idx is not None:
        raise ValueError(f"{name}: packed sequences (seq_idx) need CUDA tensors here (the fla-core path); "
                         "transformers' PyTorch code cannot keep them apart")


_torch_functions: dict[str, object] = {}


def torch_implementation(hooked):
    """transformers' own PyTorch function behind a name its kernel hook binds in a modeling module.

    The hook wraps that function (functools: `__wrapped__`), and with Hugging Face's `kernels` package installed
    (transformers >= 5.25 requires it) the wrapper is held by a function module (an `nn.Module` whose forward calls
    it from its closure, with no `__wrapped__` of its own). Both layers are taken off here; what cannot be
    unwrapped raises, so that a caller never mistakes the hooked function for transformers' own."""
    func = hooked
    if isinstance(hooked, torch.nn.Module):
        forward = type(hooked).forward
        cells = dict(zip(forward.__code__.co_freevars, forward.__closure__ or ()))
        held = cells.get("func")
        func = held.cell_contents if held is not None else None
    plain = inspect.unwrap(func) if callable(func) else None
    if plain is None or plain is func:
        raise TypeError(f"cannot find transformers' PyTorch function behind {hooked!r}: its kernel hook wraps "
                        "functions in a way this slconvert does not know")
    return plain


@contextlib.contextmanager
def transformers_torch(*modules):
    """Point the modeling modules' hooked names (`HOOKED`) at transformers' own PyTorch functions for the duration,
    whatever the hook found: the slow path beside the fast one in one process (tests, benchmarks)."""
    saved = [(module, name, getattr(module, name)) for module in modules for name in HOOKED
             if getattr(module, name, None) is not None]
    for module, name, fn in saved:
        setattr(module, name, torch_implementation(fn))
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def _transformers_torch(name: str):
    """transformers' own PyTorch implementation (the Mamba-2 reference every mixer copies)."""
    if name not in _torch_functions:
        from transformers.models.mamba2 import modeling_mamba2

        _torch_functions[name] = torch_implementation(getattr(modeling_mamba2, name))
    return _torch_functions[name]


# --------------------------------------------------------------------------------------------- SSD scan


def _ssd(ops, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_limit, final):
    batch, length, heads, headdim = x.shape
    dt = _discretize(dt, dt_bias, dt_softplus, dt_limit)  # (b, l, h) float32
    if A.dim() != 1:
        raise ValueError(f"A must have shape (nheads,), got {tuple(A.shape)}")
    g = dt * A.float()
    v = (x * dt.unsqueeze(-1)).to(x.dtype)
    k, q = _per_head(B, heads, 2), _per_head(C, heads, 2)
    if seq_idx is None:
        o, state = ops.gla(q, k, v, g, initial_states, final, None)
    else:
        seg = _Segments(seq_idx, batch, length)
        flat = [t.reshape(1, batch * length, *t.shape[2:]) for t in (q, k, v, g)]
        o, state = ops.gla(*flat, seg.initial(initial_states), final, seg.cu_seqlens)
        o = o.reshape(batch, length, heads, headdim)
        state = state[seg.last] if final else None
    y = o.float()
    if D is not None:
        y = y + x * (D.float().unsqueeze(-1) if D.dim() == 1 else D.float())
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(x.dtype), state


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, _INF),
                              return_final_states=False, return_varlen_states=False):
    """mamba-ssm's Mamba-2 chunked scan.

    x (batch, seqlen, nheads, headdim); dt (batch, seqlen, nheads); A (nheads,); B, C (batch, seqlen, ngroups,
    dstate); D (nheads,) or (nheads, headdim); z like x (output gate silu(z)); dt_bias (nheads,);
    initial_states (batch, nheads, headdim, dstate); seq_idx (batch, seqlen): the sequence of each token,
    states reset where it changes (a row's initial state starts its first sequence). Returns out like x, and
    the float32 final states (batch, nheads, headdim, dstate) with return_final_states. `chunk_size` is
    accepted for compatibility (fla picks its own chunking; the result does not depend on it).
    """
    if return_varlen_states:
        raise NotImplementedError("mamba_chunk_scan_combined: return_varlen_states is not supported")
    ops = _ops_for(x)
    if ops is None:
        _refuse_packed("mamba_chunk_scan_combined", seq_idx)
        result = _transformers_torch("mamba2_chunk_scan")(
            x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, initial_states=initial_states,
            dt_softplus=dt_softplus, dt_limit=tuple(dt_limit) if dt_limit is not None else (0.0, _INF),
            return_final_states=return_final_states)
        if z is None:
            return result
        out, rest = (result[0], result[1:]) if return_final_states else (result, ())
        out = (out.float() * F.silu(z.float())).to(out.dtype)
        return (out, *rest) if return_final_states else out
    CALLS["mamba_chunk_scan_combined"] += 1
    out, state = _ssd(ops, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_limit,
                      return_final_states)
    return (out, state) if return_final_states else out


# --------------------------------------------------------------------------------------------- convolution


def _act(y, activation):
    if activation is None:
        return y
    from transformers.activations import ACT2FN

    return ACT2FN[activation](y)


def _torch_conv(x, weight, bias, initial_states, return_final_states, activation):
    width = weight.shape[-1]
    full = x if initial_states is None else torch.cat([initial_states.to(x.dtype), x], dim=-1)
    pad = 0 if initial_states is not None else width - 1
    out = F.conv1d(full.to(weight.dtype), weight.unsqueeze(1), bias, padding=pad, groups=x.shape[1])
    out = _act(out[..., : full.shape[-1]][..., -x.shape[-1]:], activation).to(x.dtype)
    if not return_final_states:
        return out, None
    state = F.pad(full, (max(width - 1 - full.shape[-1], 0), 0))[..., -(width - 1):] if width > 1 else full[..., :0]
    return out, state


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """causal-conv1d's depthwise causal convolution.

    x (batch, dim, seqlen); weight (dim, width); bias (dim,); seq_idx (batch, seqlen): no mixing across
    sequences; initial_states (batch, dim, width - 1): the inputs before x; activation None, "silu" or "swish"
    (others run the PyTorch path). Returns out like x, and the final states (batch, dim, width - 1) with
    return_final_states (written into final_states_out when given).
    """
    if seq_idx is not None and initial_states is not None:
        raise NotImplementedError("causal_conv1d_fn: seq_idx together with initial_states is not supported")
    ops = _ops_for(x)
    if ops is None or activation not in (None, "silu", "swish"):
        _refuse_packed("causal_conv1d_fn", seq_idx)
        out, state = _torch_conv(x, weight, bias, initial_states, return_final_states, activation)
    else:
        CALLS["causal_conv1d_fn"] += 1
        batch, dim, length = x.shape
        xt = x.transpose(1, 2)  # (b, l, d): a view, fla reads strided rows
        h0 = F.pad(initial_states, (1, 0)) if initial_states is not None else None  # fla's states are width wide
        if seq_idx is None:
            y, state = ops.conv(xt, weight, bias, activation, h0, return_final_states, None)
        else:
            seg = _Segments(seq_idx, batch, length)
            y, state = ops.conv(xt.reshape(1, batch * length, dim), weight, bias, activation, None,
                                return_final_states, seg.cu_seqlens)
            state = state[seg.last] if return_final_states else None
        out = y.reshape(batch, length, dim).transpose(1, 2)
        state = state[..., 1:] if return_final_states else None
    if not return_final_states:
        return out
    if final_states_out is not None:
        final_states_out.copy_(state)
        state = final_states_out
    return out, state


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None):
    """causal-conv1d's decode step: x (batch, dim) or (batch, dim, seqlen); conv_state (batch, dim, state_len),
    state_len >= width - 1, shifted in place by the new inputs. Returns the convolution at x's positions."""
    if cache_seqlens is not None or conv_state_indices is not None:
        raise NotImplementedError("causal_conv1d_update: cache_seqlens / conv_state_indices are not supported")
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(-1) if squeeze else x
    ops = _ops_for(x)
    width = weight.shape[-1]
    if (ops is not None and x3.shape[-1] == 1 and conv_state.shape[-1] == width and conv_state.is_contiguous()
            and conv_state.shape[:2] == x3.shape[:2] and activation in (None, "silu", "swish")):
        CALLS["causal_conv1d_update"] += 1
        out = ops.conv_update(x3[..., 0], conv_state, weight, bias, activation).unsqueeze(-1)
    else:
        length, state_len = x3.shape[-1], conv_state.shape[-1]
        full = torch.cat([conv_state, x3.to(conv_state.dtype)], dim=-1)
        conv_state.copy_(full[..., -state_len:])
        out = F.conv1d(full.to(weight.dtype), weight.unsqueeze(1), bias, groups=x3.shape[1])[..., -length:]
        out = _act(out, activation).to(x.dtype)
    return out[..., 0] if squeeze else out


# --------------------------------------------------------------------------------------------- fused training path


def mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                     initial_states=None, seq_idx=None, dt_limit=(0.0, _INF),
                                     return_final_states=False, activation="silu", rmsnorm_weight=None,
                                     rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None,
                                     ngroups=1, norm_before_gate=True):
    """mamba-ssm's fused Mamba-2 block after in_proj: split, causal conv, scan, gated RMSNorm, out_proj.

    zxbcdt (batch, seqlen, 2 * d_nonssm + dim + dim + 2 * ngroups * dstate + nheads), laid out as
    [z0 x0 | z | x B C | dt] (z0, x0: an optional SwiGLU MLP). Without rmsnorm_weight the scan output is gated
    by silu(z). dt always goes through softplus. Returns None on tensors that are not on a CUDA device, which
    makes transformers' mixers take their unfused PyTorch path (their own convention for this function).
    """
    ops = _ops_for(zxbcdt)
    if ops is None:
        return None
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError(f"mamba_split_conv1d_scan_combined: activation {activation!r}")
    CALLS["mamba_split_conv1d_scan_combined"] += 1
    batch, length, width_all = zxbcdt.shape
    nheads = A.shape[0]
    if headdim is None:
        if D is None or D.dim() != 2:
            raise ValueError("mamba_split_conv1d_scan_combined: give headdim (or D of shape (nheads, headdim))")
        headdim = D.shape[1]
    dim = nheads * headdim
    dstate = (conv1d_weight.shape[0] - dim) // (2 * ngroups)
    d_nonssm = (width_all - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    if d_nonssm < 0 or 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads != width_all:
        raise ValueError(f"zxbcdt has {width_all} features, which does not fit nheads={nheads}, headdim={headdim}, "
                         f"ngroups={ngroups}, conv width {conv1d_weight.shape[0]}")
    zx0, z, xbc, dt = zxbcdt.split([2 * d_nonssm, dim, dim + 2 * ngroups * dstate, nheads], dim=-1)
    xbc = causal_conv1d_fn(xbc.transpose(1, 2), conv1d_weight, conv1d_bias, seq_idx=seq_idx,
                           activation=activation).transpose(1, 2)
    x, B, C = xbc.split([dim, ngroups * dstate, ngroups * dstate], dim=-1)
    x = x.unflatten(-1, (nheads, headdim))
    B, C = B.unflatten(-1, (ngroups, dstate)), C.unflatten(-1, (ngroups, dstate))
    gate = z.unflatten(-1, (nheads, headdim)) if rmsnorm_weight is None else None
    y, state = _ssd(ops, x, dt, A, B, C, D, gate, dt_bias, initial_states, seq_idx, True, dt_limit,
                    return_final_states)
    y = y.flatten(-2)
    if rmsnorm_weight is not None:
        y = ops.rmsnorm_gated(y, rmsnorm_weight, z, rmsnorm_eps, dim // ngroups, norm_before_gate)
    if d_nonssm > 0:
        z0, x0 = zx0.chunk(2, dim=-1)
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    if outproj_weight is not None:
        y = F.linear(y.to(outproj_weight.dtype), outproj_weight, outproj_bias)
    return (y, state) if return_final_states else y


# --------------------------------------------------------------------------------------------- decode step


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    """mamba-ssm's one-token state update (PyTorch, float32 math), updating `state` in place.

    Mamba-2: state (batch, nheads, dim, dstate), x / dt / z (batch, nheads, dim), A (nheads, dim, dstate),
    B / C (batch, ngroups, dstate), D / dt_bias (nheads, dim). Mamba-1: the same without the nheads axis
    (B / C (batch, dstate)). state_batch_indices (batch,): the rows of `state` this batch reads and writes.
    Returns out like x.
    """
    CALLS["selective_state_update"] += 1
    mamba1 = state.dim() == 3
    if mamba1:
        x, dt, B, C = x.unsqueeze(1), dt.unsqueeze(1), B.unsqueeze(1), C.unsqueeze(1)
        A = A.unsqueeze(0)
        z = z.unsqueeze(1) if z is not None else None
        D = D.unsqueeze(0) if D is not None else None
        dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None else None
    elif B.dim() == 2:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    rows = state.unsqueeze(1) if mamba1 else state
    current = rows if state_batch_indices is None else rows.index_select(0, state_batch_indices)
    batch, heads, dim, dstate = current.shape
    groups = B.shape[1]
    # Eager decode runs this once per layer and token, so it is written in few kernels: float32 math through
    # type promotion (no separate casts), and heads read their group's B and C through a broadcast view instead
    # of a copy per head (`_per_head`).
    grouped = (batch, groups, _heads_per_group(heads, groups), dim, dstate)
    dt = _discretize(dt, dt_bias, dt_softplus, None)  # (batch, heads, dim) float32
    decay = torch.exp(dt.unsqueeze(-1) * A).view(grouped)
    inflow = (dt * x).view(grouped[:-1]).unsqueeze(-1) * B.view(batch, groups, 1, 1, dstate)
    new = torch.addcmul(inflow, current.float().reshape(grouped), decay)
    out = (new * C.view(batch, groups, 1, 1, dstate)).sum(-1).view(batch, heads, dim)
    if D is not None:
        out = torch.addcmul(out, x, D)
    if z is not None:
        out = out * F.silu(z.float())
    new = new.view(batch, heads, dim, dstate)
    if state_batch_indices is None:
        rows.copy_(new)
    else:
        rows.index_copy_(0, state_batch_indices, new.to(rows.dtype))
    out = out.to(x.dtype)
    return out.squeeze(1) if mamba1 else out


# --------------------------------------------------------------------------------------------- registration


def _asked_by_hook() -> bool:
    """True when the import under way comes from transformers' kernel hook (and not from anyone else)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == _HOOK_MODULE:
            return True
        if not (name == __name__ or name == "importlib" or name.startswith("importlib.")):
            return False
        frame = frame.f_back
    return False


def _check() -> tuple[bool, str]:
    if not enabled():
        return False, f"{ENV_VAR}=0"
    if not (_state["force"] or torch.cuda.is_available()):
        return False, "no CUDA device (the PyTorch fallback runs)"
    if _override is None:
        try:
            _fla()  # imports fla before any stand-in module exists, so fla binds no `causal_conv1d` of ours
        except Exception as err:  # noqa: BLE001 - any import failure means: keep transformers' fallback
            warnings.warn(f"slconvert: fla-core is not usable ({type(err).__name__}: {err}); Mamba-2 layers run "
                          "transformers' PyTorch fallback (pip install fla-core, or mamba-ssm)", stacklevel=3)
            return False, f"fla-core is not usable: {err}"
    return True, ""


def _usable() -> bool:
    if _state["usable"] is None:
        _state["usable"], _state["reason"] = _check()
    return _state["usable"]


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        for name in _SHIMS[module.__name__]:
            setattr(module, name, globals()[name])
        module.__doc__ = f"slconvert.fast_mamba's functions under the name {module.__name__} (fla-core kernels)."
        _state["served"].append(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    """Answers transformers' hook with `mamba_ssm` / `causal_conv1d` when the real packages are absent."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _SHIMS or not _asked_by_hook() or not _usable():
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), origin="slconvert.fast_mamba")


_finder = _Finder()


def install(force: bool = False) -> bool:
    """Register the fast path with transformers' kernel hook (idempotent; `import slconvert` calls it).

    Appended last to sys.meta_path, so an installed mamba-ssm or causal-conv1d wins. Modeling modules imported
    before this call keep what they found. force: serve even without a CUDA device (tests, with a stand-in).
    Returns False when SLCONVERT_FAST_MAMBA=0.
    """
    if not enabled():
        return False
    if force and not _state["force"]:
        _state["force"], _state["usable"] = True, None
    if not _state["installed"]:
        early = [m for m in _MODELING if f"transformers.models.{m}.modeling_{m}" in sys.modules]
        if early and torch.cuda.is_available() and not any(
                importlib.util.find_spec(p) is not None for p in _SHIMS):
            warnings.warn(f"slconvert: transformers' {', '.join(early)} modeling code was imported before "
                          "slconvert, so its Mamba layers keep the PyTorch fallback; import slconvert first",
                          stacklevel=2)
        sys.meta_path.append(_finder)
        _state["installed"] = True
    return True


def status() -> dict:
    """Whether the hook is installed, whether it can serve, why not, and which stand-in modules it served."""
    return {"enabled": enabled(), "installed": _state["installed"], "usable": _state["usable"],
            "reason": _state["reason"], "served": list(_state["served"]), "calls": dict(CALLS)}


def runs_fla_on_any_device(model: torch.nn.Module) -> bool:
    """Whether transformers sends this model's Gated DeltaNet layers (Qwen3-Next, Qwen3.5, OLMo-hybrid) to fla-core's
    Triton kernels: it does whenever fla-core is importable, without looking at the tensors' device, so on the CPU
    those layers fail ("cannot be accessed from Triton"). Unlike the Mamba-2 functions above, nothing here can send
    them back to PyTorch: transformers resolves them from the real fla package."""
    return _fla_importable() and any(type(module).__name__.endswith("GatedDeltaNet") for module in model.modules())


def _fla_importable() -> bool:
    return importlib.util.find_spec("fla") is not None


def warn_if_cpu_cannot_run(model: torch.nn.Module) -> None:
    """One warning when a model that `runs_fla_on_any_device` sits on the CPU, naming the way out."""
    if next(model.parameters()).device.type == "cpu" and runs_fla_on_any_device(model):
        warnings.warn(f"slconvert: with fla-core installed, transformers runs the Gated DeltaNet layers of this "
                      f"{model.config.model_type} model on fla's Triton kernels, which cannot run on the CPU; move "
                      "the model to a CUDA device, or uninstall fla-core for CPU runs", stacklevel=3)
