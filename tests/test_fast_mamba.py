"""The fast Mamba-2 path (slconvert.fast_mamba) on the CPU.

fla-core's Triton kernels do not run under the Triton interpreter, so here its four calls are replaced by the
PyTorch loops of `mamba_reference.TorchOps` (same call conventions): what runs is everything slconvert adds
around fla, i.e. the Mamba-2 -> gated-linear-attention mapping (dt bias / softplus / limits, A, grouped B and
C, D, the z gate), packed sequences (seq_idx -> cu_seqlens), initial and final states, the convolution's
states and decode update, the fused training path and the decode step; checked against transformers'
PyTorch fallback and a float64 recurrence (outputs, final states, gradients of every input; chunked prefill
equals one shot, the decode step equals the recurrence). A child process checks the registration: the
stand-in modules reach transformers' kernel hook (and only it), and tiny models of every architecture whose
mixers use the hook give the fallback's logits, gradients and cache states. Without CUDA the hook stays
off, and SLCONVERT_FAST_MAMBA=0 turns it off. tests/test_fast_mamba_gpu.py runs the same checks on fla's
kernels on a GPU.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from interpreter_worker import interpreted_results
from mamba_reference import INF, TorchOps, compare_model, rel, ssd_reference, torch_rmsnorm_gated, transformers_fallback

from slconvert import fast_mamba as fm

TOL = 1e-4  # float32 against float32 / float64 references
ARCHS = ("nemotron_h", "granitemoehybrid", "bamba", "falcon_h1", "jamba", "lfm2", "qwen3_next")


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(fm, "_override", TorchOps())
    return fm


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _ssd_inputs(batch=2, length=37, heads=4, headdim=8, groups=2, dstate=16, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return _leaf(torch.randn(*shape, generator=g) * scale + shift)

    return dict(
        x=rnd(batch, length, heads, headdim),
        dt=rnd(batch, length, heads, scale=0.7, shift=-0.5),
        A=_leaf(-(torch.rand(heads, generator=g) * 6 + 0.3)),  # strong decays: up to ~exp(-6) per token
        B=rnd(batch, length, groups, dstate, scale=0.5),
        C=rnd(batch, length, groups, dstate, scale=0.5),
        D=rnd(heads),
        dt_bias=rnd(heads, scale=0.5),
        initial_states=rnd(batch, heads, headdim, dstate, scale=0.5),
    )


def _grads(out, leaves, seed=1):
    """Gradients of a fixed random projection of the outputs with respect to `leaves`."""
    g = torch.Generator().manual_seed(seed)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs if o is not None)
    return torch.autograd.grad(loss, leaves, allow_unused=True)


def _fallback_scan(**kw):
    return fm._transformers_torch("mamba2_chunk_scan")(**kw)


# --------------------------------------------------------------------------------------------- the scan


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("dt_limit", [(0.0, INF), (0.05, 0.9)])
def test_scan_matches_fallback_and_recurrence(stand_in, groups, dt_limit):
    inp = _ssd_inputs(groups=groups)
    leaves = list(inp.values())
    kw = dict(chunk_size=16, dt_softplus=True, dt_limit=dt_limit, return_final_states=True)
    calls = fm.CALLS["mamba_chunk_scan_combined"]
    out, final = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D=inp["D"],
                                              dt_bias=inp["dt_bias"], initial_states=inp["initial_states"], **kw)
    assert fm.CALLS["mamba_chunk_scan_combined"] == calls + 1, "the stand-in ops did not run"
    ref_out, ref_final = _fallback_scan(hidden_states=inp["x"], dt=inp["dt"], A=inp["A"], B=inp["B"], C=inp["C"],
                                        D=inp["D"], dt_bias=inp["dt_bias"], initial_states=inp["initial_states"], **kw)
    exact_out, exact_final = ssd_reference(**{k: v for k, v in inp.items()}, dt_softplus=True, dt_limit=dt_limit)
    assert out.dtype == inp["x"].dtype and final.dtype == torch.float32
    assert final.shape == inp["initial_states"].shape
    assert rel(out, ref_out) < TOL and rel(final, ref_final) < TOL
    assert rel(out, exact_out) < TOL and rel(final, exact_final) < TOL
    for name, a, b in zip(inp, _grads((out, final), leaves), _grads((ref_out, ref_final), leaves)):
        assert rel(a, b) < TOL, f"d{name}"


def test_scan_without_optional_inputs(stand_in):
    inp = _ssd_inputs()
    out = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"].abs(), inp["A"], inp["B"], inp["C"], chunk_size=8)
    exact, _ = ssd_reference(inp["x"], inp["dt"].abs(), inp["A"], inp["B"], inp["C"])
    assert isinstance(out, torch.Tensor) and rel(out, exact) < TOL


def test_scan_d_per_channel_and_z_gate(stand_in):
    inp = _ssd_inputs()
    D = _leaf(torch.randn(4, 8))
    z = _leaf(torch.randn_like(inp["x"]))
    out = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16, D=D, z=z,
                                       dt_bias=inp["dt_bias"], dt_softplus=True)
    exact, _ = ssd_reference(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D=D, z=z, dt_bias=inp["dt_bias"],
                             dt_softplus=True)
    assert rel(out, exact) < TOL
    leaves = [inp["x"], D, z, inp["A"]]
    for a, b in zip(_grads(out, leaves), _grads(exact, leaves)):
        assert rel(a, b) < TOL


def test_chunked_prefill_equals_one_shot(stand_in):
    inp = _ssd_inputs(length=45)
    kw = dict(D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True, return_final_states=True)
    whole, whole_final = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16,
                                                      initial_states=inp["initial_states"], **kw)
    state, pieces = inp["initial_states"], []
    for a, b in ((0, 20), (20, 21), (21, 45)):
        piece, state = fm.mamba_chunk_scan_combined(*(inp[k][:, a:b] for k in ("x", "dt")), inp["A"],
                                                    inp["B"][:, a:b], inp["C"][:, a:b], 16, initial_states=state,
                                                    **kw)
        pieces.append(piece)
    assert rel(torch.cat(pieces, 1), whole) < TOL and rel(state, whole_final) < TOL


def _packed_ids(batch, length, cuts):
    ids = torch.zeros(batch, length, dtype=torch.int32)
    for row, row_cuts in enumerate(cuts):
        for c in row_cuts:
            ids[row, c:] += 1
    return ids


def test_packed_sequences_match_separate_runs(stand_in):
    inp = _ssd_inputs(length=30)
    seq_idx = _packed_ids(2, 30, [(7, 8, 20), (13,)])  # one-token sequence at 7 in row 0
    kw = dict(D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True)
    out, final = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16,
                                              initial_states=inp["initial_states"], seq_idx=seq_idx,
                                              return_final_states=True, **kw)
    exact, exact_final = ssd_reference(**inp, seq_idx=seq_idx, dt_softplus=True)
    assert rel(out, exact) < TOL and rel(final, exact_final) < TOL
    # each sequence alone: the row's first one starts from the row's initial state
    for row, bounds in ((0, (0, 7, 8, 20, 30)), (1, (0, 13, 30))):
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = inp["initial_states"][row:row + 1] if i == 0 else None
            alone = fm.mamba_chunk_scan_combined(*(inp[k][row:row + 1, a:b] for k in ("x", "dt")), inp["A"],
                                                 inp["B"][row:row + 1, a:b], inp["C"][row:row + 1, a:b], 16,
                                                 initial_states=h0, **kw)
            assert rel(out[row:row + 1, a:b], alone) < TOL
    leaves = list(inp.values())
    for name, a, b in zip(inp, _grads((out, final), leaves), _grads((exact, exact_final), leaves)):
        assert rel(a, b) < TOL, f"d{name}"


def test_cpu_tensors_run_transformers_fallback():
    """Without a CUDA device (and no stand-in) the functions are transformers' PyTorch code."""
    assert fm._override is None
    inp = _ssd_inputs()
    before = dict(fm.CALLS)
    out = fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16, D=inp["D"],
                                       dt_bias=inp["dt_bias"], dt_softplus=True)
    ref = _fallback_scan(hidden_states=inp["x"], dt=inp["dt"], A=inp["A"], B=inp["B"], C=inp["C"], chunk_size=16,
                         D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True)
    assert torch.equal(out, ref)
    zx = torch.randn(2, 9, 2 * 32 + 2 * 8 + 4)
    assert fm.mamba_split_conv1d_scan_combined(zx, torch.randn(48, 4), None, torch.zeros(4), -torch.ones(4),
                                               torch.ones(4), 16, headdim=8) is None
    with pytest.raises(ValueError, match="packed sequences"):
        fm.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16,
                                     seq_idx=torch.zeros(2, 37, dtype=torch.int32))
    assert dict(fm.CALLS) == before


# --------------------------------------------------------------------------------------------- convolution


def _conv_inputs(batch=2, length=23, dim=12, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    # the mixers hand over (batch, dim, length) views of a (batch, length, features) projection
    proj = torch.randn(batch, length, dim + 5, generator=g)
    x = _leaf(proj)[..., 2:2 + dim].transpose(1, 2)
    return x, _leaf(torch.randn(dim, width, generator=g) * 0.5), _leaf(torch.randn(dim, generator=g))


@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_matches_fallback(stand_in, activation):
    x, weight, bias = _conv_inputs()
    leaves = [x, weight, bias]
    out = fm.causal_conv1d_fn(x, weight, bias, activation=activation)
    ref = fm._transformers_torch("causal_conv1d_fn")(x, weight, bias, activation=activation)
    assert out.shape == x.shape and rel(out, ref) < TOL
    for a, b in zip(_grads(out, leaves), _grads(ref, leaves)):
        assert rel(a, b) < TOL
    assert fm.CALLS["causal_conv1d_fn"] > 0


def test_conv_states_carry_a_split_sequence(stand_in):
    x, weight, bias = _conv_inputs(length=20)
    whole = fm.causal_conv1d_fn(x, weight, bias, activation="silu")
    first, state = fm.causal_conv1d_fn(x[..., :9], weight, bias, activation="silu", return_final_states=True)
    assert state.shape == (2, 12, 3)
    out = torch.empty_like(state)
    second, state2 = fm.causal_conv1d_fn(x[..., 9:], weight, bias, initial_states=state, activation="silu",
                                         return_final_states=True, final_states_out=out)
    assert state2 is out
    assert rel(torch.cat([first, second], -1), whole) < TOL
    assert torch.allclose(state2, x[..., -3:])
    # a piece shorter than the window takes the rest of its state from the initial state
    _, short = fm.causal_conv1d_fn(x[..., 9:11], weight, bias, initial_states=state, return_final_states=True)
    assert torch.allclose(short, x[..., 8:11])
    # the PyTorch path (no stand-in) computes the same
    torch_second, torch_state = fm._torch_conv(x[..., 9:], weight, bias, state, True, "silu")
    assert rel(torch_second, second) < TOL and torch.allclose(torch_state, state2)
    # and the gradient reaches the initial state
    leaves = [x, weight, bias]
    ga = _grads(torch.cat([first, second], -1), leaves)
    gb = _grads(whole, leaves)
    for a, b in zip(ga, gb):
        assert rel(a, b) < TOL


def test_conv_packed_sequences(stand_in):
    x, weight, bias = _conv_inputs(length=21)
    seq_idx = _packed_ids(2, 21, [(5, 6), (12,)])
    out, final = fm.causal_conv1d_fn(x, weight, bias, seq_idx=seq_idx, activation="silu", return_final_states=True)
    for row, bounds in ((0, (0, 5, 6, 21)), (1, (0, 12, 21))):
        for a, b in zip(bounds[:-1], bounds[1:]):
            alone = fm.causal_conv1d_fn(x[row:row + 1, :, a:b], weight, bias, activation="silu")
            assert rel(out[row:row + 1, :, a:b], alone) < TOL
    assert torch.allclose(final, x[..., -3:])


@pytest.mark.parametrize("two_dim", [False, True])
def test_conv_update_matches_fallback(stand_in, two_dim):
    x, weight, bias = _conv_inputs(length=9)
    x, weight, bias = x.detach(), weight.detach(), bias.detach()
    state = torch.randn(2, 12, 4)
    ref_state = state.clone()
    calls = fm.CALLS["causal_conv1d_update"]
    step = x[..., :1]
    out = fm.causal_conv1d_update(step[..., 0] if two_dim else step, state, weight, bias, activation="silu")
    ref = fm._transformers_torch("causal_conv1d_update")(step, ref_state, weight, bias, activation="silu")
    assert fm.CALLS["causal_conv1d_update"] == calls + 1
    assert out.shape == (step[..., 0] if two_dim else step).shape
    assert rel(out, ref[..., 0] if two_dim else ref) < TOL and torch.equal(state, ref_state)
    # several tokens at once and a state wider than the window take the PyTorch path
    wide, ref_wide = torch.randn(2, 12, 6), None
    ref_wide = wide.clone()
    out = fm.causal_conv1d_update(x[..., 1:4], wide, weight, bias)
    ref = fm._transformers_torch("causal_conv1d_update")(x[..., 1:4], ref_wide, weight, bias)
    assert rel(out, ref) < TOL and torch.equal(wide, ref_wide)
    assert fm.CALLS["causal_conv1d_update"] == calls + 1


def test_conv_update_continues_the_sequence(stand_in):
    x, weight, bias = _conv_inputs(length=12)
    x, weight, bias = x.detach(), weight.detach(), bias.detach()
    whole = fm.causal_conv1d_fn(x, weight, bias, activation="silu")
    _, state = fm.causal_conv1d_fn(x[..., :10], weight, bias, activation="silu", return_final_states=True)
    cache = F.pad(state, (1, 0)).contiguous()  # transformers' caches are width wide
    for t in (10, 11):
        y = fm.causal_conv1d_update(x[..., t:t + 1], cache, weight, bias, activation="silu")
        assert rel(y, whole[..., t:t + 1]) < TOL


# --------------------------------------------------------------------------------------------- decode step


def test_decode_step_matches_fallback_and_scan(stand_in):
    inp = _ssd_inputs(length=13)
    x, dt, A, B, C, D, dt_bias, h0 = (inp[k].detach() for k in inp)
    heads, headdim, dstate = 4, 8, 16
    _, state = fm.mamba_chunk_scan_combined(x[:, :12], dt[:, :12], A, B[:, :12], C[:, :12], 16, D=D,
                                            dt_bias=dt_bias, dt_softplus=True, initial_states=h0,
                                            return_final_states=True)
    whole, whole_state = fm.mamba_chunk_scan_combined(x, dt, A, B, C, 16, D=D, dt_bias=dt_bias, dt_softplus=True,
                                                      initial_states=h0, return_final_states=True)
    # the arguments as the mixers pass them: dt, A, D, dt_bias expanded over headdim (and dstate)
    args = (x[:, 12], dt[:, 12, :, None].expand(-1, -1, headdim), A[:, None, None].expand(-1, headdim, dstate),
            B[:, 12], C[:, 12], D[:, None].expand(-1, headdim))
    kw = dict(dt_bias=dt_bias[:, None].expand(-1, headdim), dt_softplus=True)
    ours_state, ref_state = state.clone(), state.clone()
    out = fm.selective_state_update(ours_state, *args, z=None, **kw)
    ref = fm._transformers_torch("mamba2_selective_state_update")(ref_state, *args, z=None, **kw)
    assert rel(out, ref) < TOL and rel(ours_state, ref_state) < TOL
    assert rel(out, whole[:, 12]) < TOL and rel(ours_state, whole_state) < TOL
    # with z, and with a float32 state for bf16 inputs
    z = torch.randn_like(x[:, 12])
    s1, s2 = state.clone(), state.clone()
    out = fm.selective_state_update(s1, *args, z=z, **kw)
    ref = fm._transformers_torch("mamba2_selective_state_update")(s2, *args, z=z, **kw)
    assert rel(out, ref) < TOL and rel(s1, s2) < TOL
    # rows of a larger state picked by state_batch_indices
    big = torch.randn(5, heads, headdim, dstate)
    big[3], big[1] = state[0], state[1]
    untouched = big[[0, 2, 4]].clone()
    out_idx = fm.selective_state_update(big, *args, z=None, state_batch_indices=torch.tensor([3, 1]), **kw)
    assert rel(out_idx, whole[:, 12]) < TOL and rel(big[[3, 1]], whole_state) < TOL
    assert torch.equal(big[[0, 2, 4]], untouched)


def test_decode_step_mamba1_layout():
    """Jamba's Mamba-1 layer decodes through the same hook: (batch, dim, dstate) states."""
    jamba = importlib.import_module("transformers.models.jamba.modeling_jamba")
    ref_fn = fm.torch_implementation(jamba.mamba_selective_state_update)
    g = torch.Generator().manual_seed(3)
    batch, dim, dstate = 2, 10, 6
    state = torch.randn(batch, dim, dstate, generator=g)
    args = (torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g),
            -torch.rand(dim, dstate, generator=g) * 3, torch.randn(batch, dstate, generator=g),
            torch.randn(batch, dstate, generator=g), torch.randn(dim, generator=g))
    kw = dict(z=torch.randn(batch, dim, generator=g), dt_bias=torch.randn(dim, generator=g), dt_softplus=True)
    s1, s2 = state.clone(), state.clone()
    out = fm.selective_state_update(s1, *args, **kw)
    ref = ref_fn(s2, *args, **kw)
    assert out.shape == (batch, dim) and rel(out, ref) < TOL and rel(s1, s2) < TOL


# --------------------------------------------------------------------------------------------- fused training path


def _mixer(n_groups=2):
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMamba2Mixer

    from slconvert.tiny import tiny_config

    config = tiny_config("nemotron_h")
    config.n_groups = n_groups
    torch.manual_seed(0)
    mixer = NemotronHMamba2Mixer(config, layer_idx=0)
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(p + 0.1 * torch.randn_like(p))
        mixer.A_log.copy_(torch.linspace(-1, 1.5, mixer.num_heads))
    return mixer.train()


def _fused_kwargs(mixer):
    return dict(D=mixer.D, chunk_size=mixer.chunk_size, activation=mixer.activation,
                rmsnorm_weight=mixer.norm.weight, rmsnorm_eps=mixer.norm.variance_epsilon,
                outproj_weight=mixer.out_proj.weight, outproj_bias=mixer.out_proj.bias, headdim=mixer.head_dim,
                ngroups=mixer.n_groups, norm_before_gate=False, dt_limit=tuple(mixer.time_step_limit))


def test_fused_training_path_matches_the_mixer(stand_in):
    mixer = _mixer()
    hidden = _leaf(torch.randn(2, 37, mixer.hidden_size))
    with transformers_fallback(sys.modules[type(mixer).__module__]):
        ref = mixer(hidden)  # training mode, no cache: the PyTorch fallback's unfused path
    conv = mixer.conv1d
    out = fm.mamba_split_conv1d_scan_combined(mixer.in_proj(hidden), conv.weight.squeeze(1), conv.bias,
                                              mixer.dt_bias, -torch.exp(mixer.A_log.float()), **_fused_kwargs(mixer))
    assert out.shape == ref.shape and rel(out, ref) < TOL
    leaves = [hidden] + list(mixer.parameters())
    names = ["hidden"] + [n for n, _ in mixer.named_parameters()]
    for name, a, b in zip(names, _grads(out, leaves), _grads(ref, leaves)):
        assert rel(a, b) < TOL, f"d{name}"


def test_fused_variants(stand_in):
    mixer = _mixer(n_groups=1)
    hidden = torch.randn(2, 21, mixer.hidden_size)
    zxbcdt = mixer.in_proj(hidden).detach()
    conv, A = mixer.conv1d, -torch.exp(mixer.A_log.float())
    base = dict(_fused_kwargs(mixer), outproj_weight=None, outproj_bias=None)
    dim, heads = mixer.intermediate_size, mixer.num_heads
    z, xbc, dt = zxbcdt.split([dim, mixer.conv_dim, heads], -1)
    xbc = fm.causal_conv1d_fn(xbc.transpose(1, 2), conv.weight.squeeze(1), conv.bias, activation="silu").transpose(1, 2)
    x, B, C = xbc.split([dim, 16, 16], -1)
    scan_args = (x.unflatten(-1, (heads, -1)), dt, A, B.unflatten(-1, (1, 16)), C.unflatten(-1, (1, 16)), 16)
    scan_kw = dict(D=mixer.D, dt_bias=mixer.dt_bias, dt_softplus=True, dt_limit=base["dt_limit"])
    y, final = fm.mamba_chunk_scan_combined(*scan_args, return_final_states=True, **scan_kw)
    # no norm: the scan output gated by silu(z); final states come back on request
    out, state = fm.mamba_split_conv1d_scan_combined(zxbcdt, conv.weight.squeeze(1), conv.bias, mixer.dt_bias, A,
                                                     **dict(base, rmsnorm_weight=None), return_final_states=True)
    assert rel(out, (y.flatten(-2) * F.silu(z))) < TOL and rel(state, final) < TOL
    # norm before the gate
    out = fm.mamba_split_conv1d_scan_combined(zxbcdt, conv.weight.squeeze(1), conv.bias, mixer.dt_bias, A,
                                              **dict(base, norm_before_gate=True))
    expect = torch_rmsnorm_gated(y.flatten(-2), mixer.norm.weight, z, base["rmsnorm_eps"], dim, True)
    assert rel(out, expect) < TOL
    # a SwiGLU part in front ([z0 x0 | z | xBC | dt])
    extra = torch.randn(2, 21, 2 * 6)
    out = fm.mamba_split_conv1d_scan_combined(torch.cat([extra, zxbcdt], -1), conv.weight.squeeze(1), conv.bias,
                                              mixer.dt_bias, A, **base)
    z0, x0 = extra.chunk(2, -1)
    assert rel(out[..., :6], F.silu(z0) * x0) < TOL
    expect = torch_rmsnorm_gated(y.flatten(-2), mixer.norm.weight, z, base["rmsnorm_eps"], dim, False)
    assert rel(out[..., 6:], expect) < TOL
    with pytest.raises(ValueError, match="does not fit"):
        fm.mamba_split_conv1d_scan_combined(zxbcdt[..., 1:], conv.weight.squeeze(1), conv.bias, mixer.dt_bias, A,
                                            **base)


# --------------------------------------------------------------------------------------------- registration


def _child(mode: str, env_extra=None) -> dict:
    return interpreted_results(__file__, mode, env=env_extra, interpret=False, timeout=900)


class _NoFla:
    """Hides fla-core: the forced child runs the stand-in on the CPU, where transformers would otherwise take
    fla's gated-delta-rule kernels (which cannot run on CPU tensors) for Qwen3-Next."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "fla" or fullname.startswith("fla."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def _worker(mode: str) -> dict:
    torch.set_num_threads(1)
    if mode == "forced":
        sys.meta_path.insert(0, _NoFla())
    import slconvert  # noqa: F401  (installs the hook)
    from slconvert import fast_mamba

    report = {"installed_at_import": fast_mamba.status()["installed"],
              "finder_on_path": fast_mamba._finder in sys.meta_path}
    if mode == "forced":
        fast_mamba._override = TorchOps()
        fast_mamba.install(force=True)
        # transformers >= 5.25 sends CPU tensors to its own code ahead of a package that runs on CUDA only; the
        # stand-in runs on the CPU, so the hook's packages are declared for it (before any modeling module binds them)
        hub = importlib.import_module("transformers.integrations.hub_kernels")
        devices = getattr(hub, "_PACKAGE_SUPPORTED_DEVICES", {})
        for name in fast_mamba._SHIMS:
            if name in devices:
                devices[name] = (*devices[name], "cpu")
        # anyone but transformers' hook is told there is no mamba_ssm / causal_conv1d
        for name in ("mamba_ssm", "causal_conv1d"):
            try:
                importlib.import_module(name)
                report[f"import_{name}"] = "imported"
            except ModuleNotFoundError:
                report[f"import_{name}"] = "not found"
        report["results"] = {arch: compare_model(arch, "cpu", torch.float32) for arch in ARCHS}
        report["shim_is_ours"] = (sys.modules["mamba_ssm"].mamba_chunk_scan_combined
                                  is fast_mamba.mamba_chunk_scan_combined
                                  and sys.modules["causal_conv1d"].causal_conv1d_fn is fast_mamba.causal_conv1d_fn)
    else:
        importlib.import_module("transformers.models.nemotron_h.modeling_nemotron_h")
        report["results"] = {}
    report["status"] = fast_mamba.status()
    report["modules"] = [m for m in ("mamba_ssm", "causal_conv1d") if m in sys.modules]
    return report


@pytest.fixture(scope="module")
def forced():
    return _child("forced")


def test_hook_serves_transformers_only(forced):
    assert forced["installed_at_import"] and forced["finder_on_path"]
    assert forced["import_mamba_ssm"] == "not found" and forced["import_causal_conv1d"] == "not found"
    assert sorted(forced["status"]["served"]) == ["causal_conv1d", "mamba_ssm"]
    assert forced["shim_is_ours"]
    calls = forced["status"]["calls"]
    for name in ("mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "selective_state_update",
                 "causal_conv1d_fn", "causal_conv1d_update"):
        assert calls.get(name, 0) > 0, f"transformers never called {name}"


@pytest.mark.parametrize("arch", ARCHS)
def test_models_match_fallback(forced, arch):
    result = forced["results"][arch]
    assert result["state_count"] > 0 and result["mixer_calls"] > 0
    for key in ("logits", "mixers", "prefill", "decode", "states", "loss", "grads"):
        assert result[key] < 2e-4, f"{arch}: {key} relative error {result[key]:.2e} ({result.get('worst_grad')})"
    # chunked prefill equals one shot (as far as transformers' own code for the model does)
    assert result["prefill_vs_whole"] < max(2e-4, 1.5 * result["fallback_prefill_vs_whole"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine serves the fast path (test_fast_mamba_gpu.py)")
def test_cpu_machine_keeps_the_fallback():
    report = _child("default")
    assert report["installed_at_import"] and report["finder_on_path"]
    assert report["modules"] == [] and report["status"]["usable"] is False
    assert "CUDA" in report["status"]["reason"]


def test_env_var_turns_it_off():
    report = _child("default", {fm.ENV_VAR: "0"})
    assert not report["installed_at_import"] and not report["finder_on_path"]
    assert report["modules"] == [] and report["status"]["usable"] is None



def test_first_use_notice_unless_triton_holds_fla_tuning(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(fm._state, "noticed", False)
    with pytest.warns(UserWarning, match="tunes its Mamba-2 kernels on first use"):
        fm._tuning_notice()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fm._tuning_notice()  # once per process: silent the second time
    monkeypatch.setitem(fm._state, "noticed", False)
    (tmp_path / "abc123").mkdir()
    (tmp_path / "abc123" / fm._TUNED_MARK).write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fm._tuning_notice()  # tuned before on this machine: nothing to say

if __name__ == "__main__" and "--worker" in sys.argv:
    print(json.dumps(_worker(sys.argv[sys.argv.index("--worker") + 1])))
