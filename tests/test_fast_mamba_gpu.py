"""The fast Mamba-2 path (slconvert.fast_mamba) on fla-core's Triton kernels, on a CUDA GPU.

Skipped without a CUDA device or without fla-core. Each function is checked against transformers' PyTorch
fallback run in float32 on the same (upcast) inputs, at Nemotron-3-Nano's Mamba-2 shape (64-dim heads, 128
states, 8 groups) and at small ones: outputs, final states and the gradients of every input, for bfloat16
and float32 (fla's float32 products run as TF32); chunked prefill equals one shot, packed sequences equal
separate runs, the decode steps continue the scan. Then the tiny model of every architecture whose mixers
use transformers' kernel hook: logits, every mixer's output, chunked prefill and decode through the cache,
cache states, loss and every parameter gradient, fast path against fallback (bfloat16: each path against a
float32 run of the fallback, the fast path within a floor or twice the fallback's own error).

With fla-core installed, transformers also runs the gated-delta-rule layers (Qwen3-Next, Qwen3.5,
OLMo-hybrid) on fla, in both paths; on Hopper GPUs with Triton < 3.7.1 fla refuses their backward, so those
models' gradients are skipped there (reported, not failed).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
from mamba_reference import compare_model, rel, transformers_fallback

from slconvert import fast_mamba as fm
from slconvert.tiny import TINY_ARCHITECTURES

pytestmark = pytest.mark.gpu
pytest.importorskip("fla", reason="needs fla-core (pip install fla-core)")

DEV = "cuda"
TOL = {torch.bfloat16: 2e-2, torch.float32: 5e-3}
GRAD_TOL = {torch.bfloat16: 5e-2, torch.float32: 1e-2}
GDN = {"qwen3_next", "qwen3_5_moe_text", "qwen3_5_text", "olmo_hybrid"}  # gated delta rule: fla in both paths
NANO = dict(heads=64, headdim=64, groups=8, dstate=128)  # Nemotron-3-Nano's Mamba-2 layers


def _uses_hook(arch) -> bool:
    from transformers import AutoModelForCausalLM

    from slconvert.tiny import tiny_config

    module = importlib.import_module(AutoModelForCausalLM._model_mapping[type(tiny_config(arch))].__module__)
    return any(hasattr(module, name) for name in fm.HOOKED)


ARCHS = [a for a in TINY_ARCHITECTURES if _uses_hook(a)]


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _ssd_inputs(dtype, batch=2, length=300, heads=8, headdim=64, groups=2, dstate=128, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return _leaf((torch.randn(*shape, generator=g, device=DEV) * scale + shift).to(dt))

    return dict(
        x=rnd(batch, length, heads, headdim),
        dt=rnd(batch, length, heads, scale=0.7, shift=-0.3),
        A=_leaf(-torch.linspace(0.5, 16.0, heads, device=DEV)),  # up to exp(-16 dt) per token
        B=rnd(batch, length, groups, dstate, scale=0.3),
        C=rnd(batch, length, groups, dstate, scale=0.3),
        D=rnd(heads, dt=torch.float32),
        dt_bias=rnd(heads, scale=0.5, dt=torch.float32),
        initial_states=rnd(batch, heads, headdim, dstate, scale=0.3, dt=torch.float32),
    )


def _fallback_scan(inp, **kw):
    """transformers' PyTorch scan in float32 on float32 copies; returns (out, final) and the copies."""
    up = {k: _leaf(v.float()) for k, v in inp.items()}
    out = fm._transformers_torch("mamba2_chunk_scan")(up["x"], up["dt"], up["A"], up["B"], up["C"], 64, D=up["D"],
                                                      dt_bias=up["dt_bias"], initial_states=up["initial_states"],
                                                      **kw)
    return out, up


def _grads(outs, leaves, seed=1):
    g = torch.Generator(device=DEV).manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=g, device=DEV)).sum() for o in outs if o is not None)
    return torch.autograd.grad(loss, leaves, allow_unused=True)


@pytest.fixture(params=["simple_gla", "gla"])
def gla_op(request, monkeypatch):
    """Which fla op takes gradients: chunk_simple_gla, or chunk_gla (used where fla refuses the former's backward)."""
    broken = fm._fla()._simple_backward_broken(torch.device(DEV))
    if request.param == "simple_gla" and broken:
        pytest.skip("fla refuses chunk_simple_gla's backward on this GPU / Triton (chunk_gla is used instead)")
    monkeypatch.setattr(fm._FlaOps, "_simple_backward_broken", lambda self, device: request.param == "gla")
    return request.param


# --------------------------------------------------------------------------------------------- registration


def test_hook_serves_fla_on_cuda():
    importlib.import_module("transformers.models.nemotron_h.modeling_nemotron_h")
    status = fm.status()
    assert status["usable"], status["reason"]
    assert sorted(status["served"]) == ["causal_conv1d", "mamba_ssm"]
    assert sys.modules["mamba_ssm"].mamba_chunk_scan_combined is fm.mamba_chunk_scan_combined
    assert sys.modules["causal_conv1d"].causal_conv1d_update is fm.causal_conv1d_update


def test_plain_import_serves_it_in_a_fresh_process():
    code = ("import importlib, json, slconvert; from slconvert import fast_mamba as fm; "
            "importlib.import_module('transformers.models.granitemoehybrid.modeling_granitemoehybrid'); "
            "print(json.dumps(fm.status()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status["usable"] and sorted(status["served"]) == ["causal_conv1d", "mamba_ssm"], status


# --------------------------------------------------------------------------------------------- the scan


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", ["small", "nano"])
def test_scan_matches_fallback(dtype, shape, gla_op):
    inp = _ssd_inputs(dtype, **(dict(groups=2) if shape == "small" else dict(NANO, batch=1, length=1100)))
    kw = dict(dt_softplus=True, dt_limit=(0.001, 8.0), return_final_states=True)
    out, final = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 128, D=inp["D"],
                                              dt_bias=inp["dt_bias"], initial_states=inp["initial_states"], **kw)
    (ref_out, ref_final), up = _fallback_scan(inp, **kw)
    assert out.dtype == dtype and final.dtype == torch.float32
    assert rel(out, ref_out) < TOL[dtype] and rel(final, ref_final) < TOL[dtype]
    for name, a, b in zip(inp, _grads((out, final), list(inp.values())), _grads((ref_out, ref_final),
                                                                               list(up.values()))):
        assert rel(a, b) < GRAD_TOL[dtype], f"d{name}: {rel(a, b):.3e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_scan_long_forward(dtype):
    inp = _ssd_inputs(dtype, batch=1, length=8192 + 5, **NANO)
    with torch.no_grad():
        out, final = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 128,
                                                  D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True,
                                                  return_final_states=True)
        ref = fm._transformers_torch("mamba2_chunk_scan")(
            inp["x"].float(), inp["dt"].float(), inp["A"], inp["B"].float(), inp["C"].float(), 128, D=inp["D"],
            dt_bias=inp["dt_bias"], dt_softplus=True, return_final_states=True)
    assert rel(out, ref[0]) < TOL[dtype] and rel(final, ref[1]) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunked_prefill_equals_one_shot(dtype):
    inp = _ssd_inputs(dtype, batch=1, length=3334, **NANO)
    x, dt, A, B, C = (inp[k].detach() for k in ("x", "dt", "A", "B", "C"))
    kw = dict(D=inp["D"].detach(), dt_bias=inp["dt_bias"].detach(), dt_softplus=True, return_final_states=True)
    with torch.no_grad():
        whole, whole_final = fm.mamba_chunk_scan_combined(x, dt, A, B, C, 128, **kw)
        state, pieces = None, []
        for a, b in ((0, 1000), (1000, 1001), (1001, 1334), (1334, 3334)):
            piece, state = fm.mamba_chunk_scan_combined(x[:, a:b], dt[:, a:b], A, B[:, a:b], C[:, a:b], 128,
                                                        initial_states=state, **kw)
            pieces.append(piece)
    assert rel(torch.cat(pieces, 1), whole) < TOL[dtype] and rel(state, whole_final) < TOL[dtype]


def test_packed_sequences(gla_op):
    dtype = torch.bfloat16
    inp = _ssd_inputs(dtype, batch=2, length=700)
    seq_idx = torch.zeros(2, 700, dtype=torch.int32, device=DEV)
    seq_idx[0, 100:] += 1
    seq_idx[0, 101:] += 1  # a one-token sequence
    seq_idx[0, 450:] += 1
    seq_idx[1, 333:] += 1
    kw = dict(D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True)
    out, final = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 128,
                                              initial_states=inp["initial_states"], seq_idx=seq_idx,
                                              return_final_states=True, **kw)
    pieces, finals = [[], []], []
    for row, bounds in ((0, (0, 100, 101, 450, 700)), (1, (0, 333, 700))):
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = inp["initial_states"][row:row + 1] if i == 0 else None
            piece, last = fm.mamba_chunk_scan_combined(
                *(inp[k][row:row + 1, a:b] for k in ("x", "dt")), inp["A"], inp["B"][row:row + 1, a:b],
                inp["C"][row:row + 1, a:b], 128, initial_states=h0, return_final_states=True, **kw)
            pieces[row].append(piece)
        finals.append(last)
    alone = torch.cat([torch.cat(p, 1) for p in pieces], 0)
    alone_final = torch.cat(finals, 0)
    assert rel(out, alone) < TOL[dtype] and rel(final, alone_final) < TOL[dtype]
    leaves = list(inp.values())
    for name, a, b in zip(inp, _grads((out, final), leaves), _grads((alone, alone_final), leaves)):
        assert rel(a, b) < GRAD_TOL[dtype], f"d{name}"


# --------------------------------------------------------------------------------------------- convolution


def _conv_inputs(dtype, batch=2, length=1000, dim=768, width=4, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    proj = torch.randn(batch, length, dim + 40, generator=g, device=DEV).to(dtype)
    x = _leaf(proj)[..., 8:8 + dim].transpose(1, 2)  # the mixers' strided (batch, dim, length) views
    weight = _leaf((torch.randn(dim, width, generator=g, device=DEV) * 0.5).to(dtype))
    bias = _leaf(torch.randn(dim, generator=g, device=DEV).to(dtype))
    return x, weight, bias


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("width", [2, 3, 4])
def test_conv_matches_fallback(dtype, activation, width):
    x, weight, bias = _conv_inputs(dtype, width=width)
    out = fm.causal_conv1d_fn(x, weight, bias, activation=activation)
    up = [_leaf(t.float()) for t in (x, weight, bias)]
    ref = fm._transformers_torch("causal_conv1d_fn")(*up, activation=activation)
    assert out.dtype == dtype and rel(out, ref) < TOL[dtype]
    for a, b in zip(_grads((out,), [x, weight, bias]), _grads((ref,), up)):
        assert rel(a, b) < GRAD_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_conv_states_and_packing(dtype):
    x, weight, bias = _conv_inputs(dtype, length=300)
    whole = fm.causal_conv1d_fn(x, weight, bias, activation="silu")
    first, state = fm.causal_conv1d_fn(x[..., :101], weight, bias, activation="silu", return_final_states=True)
    second, state2 = fm.causal_conv1d_fn(x[..., 101:], weight, bias, initial_states=state, activation="silu",
                                         return_final_states=True)
    assert rel(torch.cat([first, second], -1), whole) < TOL[dtype]
    assert torch.equal(state2, x[..., -3:]) and torch.equal(state, x[..., 98:101])
    _, short = fm.causal_conv1d_fn(x[..., 101:103], weight, bias, initial_states=state, return_final_states=True)
    assert torch.equal(short, x[..., 100:103])
    for a, b in zip(_grads((torch.cat([first, second], -1),), [x, weight, bias]),
                    _grads((whole,), [x, weight, bias])):
        assert rel(a, b) < GRAD_TOL[dtype]
    seq_idx = torch.zeros(2, 300, dtype=torch.int32, device=DEV)
    seq_idx[0, 50:] += 1
    seq_idx[1, 200:] += 1
    seq_idx[1, 201:] += 1
    packed = fm.causal_conv1d_fn(x, weight, bias, seq_idx=seq_idx, activation="silu")
    for row, bounds in ((0, (0, 50, 300)), (1, (0, 200, 201, 300))):
        for a, b in zip(bounds[:-1], bounds[1:]):
            alone = fm.causal_conv1d_fn(x[row:row + 1, :, a:b], weight, bias, activation="silu")
            assert rel(packed[row:row + 1, :, a:b], alone) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_conv_update(dtype):
    x, weight, bias = (t.detach() for t in _conv_inputs(dtype, length=12))
    whole = fm.causal_conv1d_fn(x, weight, bias, activation="silu")
    _, state = fm.causal_conv1d_fn(x[..., :9], weight, bias, activation="silu", return_final_states=True)
    cache = torch.nn.functional.pad(state, (1, 0)).contiguous()
    ref_cache = cache.clone()
    calls = fm.CALLS["causal_conv1d_update"]
    for t in (9, 10, 11):
        y = fm.causal_conv1d_update(x[..., t:t + 1], cache, weight, bias, activation="silu")
        ref = fm._transformers_torch("causal_conv1d_update")(x[..., t:t + 1], ref_cache, weight, bias,
                                                             activation="silu")
        assert rel(y, whole[..., t:t + 1]) < TOL[dtype] and rel(y, ref) < TOL[dtype]
        assert torch.equal(cache, ref_cache)
    assert fm.CALLS["causal_conv1d_update"] == calls + 3, "fla's update kernel did not run"


# --------------------------------------------------------------------------------------------- decode and fused path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_decode_steps_continue_the_scan(dtype):
    inp = _ssd_inputs(dtype, batch=2, length=203, **dict(NANO, groups=8))
    x, dt, A, B, C, D, dt_bias, h0 = (inp[k].detach() for k in inp)
    kw = dict(D=D, dt_bias=dt_bias, dt_softplus=True, return_final_states=True)
    with torch.no_grad():
        whole, whole_state = fm.mamba_chunk_scan_combined(x, dt, A, B, C, 128, initial_states=h0, **kw)
        _, state = fm.mamba_chunk_scan_combined(x[:, :200], dt[:, :200], A, B[:, :200], C[:, :200], 128,
                                                initial_states=h0, **kw)
    p, n = x.shape[-1], B.shape[-1]
    for t in (200, 201, 202):
        y = fm.selective_state_update(state, x[:, t], dt[:, t, :, None].expand(-1, -1, p),
                                      A[:, None, None].expand(-1, p, n), B[:, t], C[:, t], D[:, None].expand(-1, p),
                                      dt_bias=dt_bias[:, None].expand(-1, p), dt_softplus=True)
        assert rel(y, whole[:, t]) < TOL[dtype]
    assert rel(state, whole_state) < TOL[dtype]


def _nano_mixer(hidden=512, **overrides):
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMamba2Mixer

    from slconvert.tiny import tiny_config

    config = tiny_config("nemotron_h", hidden=hidden)
    for key, value in dict(mamba_num_heads=16, mamba_head_dim=64, ssm_state_size=128, n_groups=8, chunk_size=128,
                           conv_kernel=4, **overrides).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    mixer = NemotronHMamba2Mixer(config, layer_idx=0)
    with torch.no_grad():
        mixer.dt_bias.uniform_(-1, 1)
    return mixer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_training_path_matches_the_mixer(dtype):
    import copy

    reference = _nano_mixer().to(DEV).train()
    mixer = copy.deepcopy(reference).to(dtype)
    module = sys.modules[type(mixer).__module__]
    hidden = _leaf(torch.randn(2, 1500, 512, device=DEV).to(dtype))
    calls = fm.CALLS["mamba_split_conv1d_scan_combined"]
    out = mixer(hidden)
    assert fm.CALLS["mamba_split_conv1d_scan_combined"] == calls + 1, "the mixer did not take the fused fast path"
    up = _leaf(hidden.float())
    with transformers_fallback(module):
        ref = reference(up)
    assert rel(out, ref) < TOL[dtype]
    ga = _grads((out,), [hidden] + list(mixer.parameters()))
    gb = _grads((ref,), [up] + list(reference.parameters()))
    names = ["hidden"] + [n for n, _ in mixer.named_parameters()]
    for name, a, b in zip(names, ga, gb):
        assert rel(a, b) < GRAD_TOL[dtype], f"d{name}: {rel(a, b):.3e}"


# --------------------------------------------------------------------------------------------- whole tiny models


@pytest.mark.parametrize("arch", ARCHS)
def test_model_float32(arch):
    result = compare_model(arch, DEV, torch.float32, length=200, chunks=(77, 123), decode=4)
    assert result["mixer_calls"] > 0 and result["state_count"] > 0
    if "grads_skipped" in result:
        assert arch in GDN, result["grads_skipped"]
    for key in ("logits", "mixers", "prefill", "decode", "states"):
        assert result[key] < TOL[torch.float32], f"{arch}: {key} {result[key]:.2e}"
    if "grads" in result:
        assert result["loss"] < 1e-3 and result["grads"] < 2e-2, f"{arch}: {result}"
    assert result["prefill_vs_whole"] < max(TOL[torch.float32], 1.5 * result["fallback_prefill_vs_whole"])


FLOOR = {"logits": 3e-2, "mixers": 3e-2, "prefill": 3e-2, "decode": 3e-2, "states": 3e-2, "loss": 1e-2,
         "grads": 8e-2}


@pytest.mark.parametrize("arch", ARCHS)
def test_model_bfloat16(arch):
    result = compare_model(arch, DEV, torch.bfloat16, length=200, chunks=(77, 123), decode=4, truth=True)
    fast, slow = result["fast_vs_truth"], result["fallback_vs_truth"]
    if "grads_skipped" in result:
        assert arch in GDN, result["grads_skipped"]
    for key, floor in FLOOR.items():
        if key in slow:
            assert fast[key] <= max(floor, 2 * slow[key]), (
                f"{arch}: {key} fast {fast[key]:.2e} vs fallback {slow[key]:.2e} against float32"
                f" ({fast.get('worst_grad')})")


def test_models_take_the_fast_path():
    from transformers import AutoModelForCausalLM

    from slconvert.tiny import tiny_config

    model = AutoModelForCausalLM.from_config(tiny_config("nemotron_h")).to(DEV)
    ids = torch.randint(4, 300, (1, 50), device=DEV)
    before = dict(fm.CALLS)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids, use_cache=True)
    model.train()
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    for name in ("mamba_chunk_scan_combined", "causal_conv1d_fn", "mamba_split_conv1d_scan_combined"):
        assert fm.CALLS[name] > before.get(name, 0), name
