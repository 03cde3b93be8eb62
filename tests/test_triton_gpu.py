"""Triton backend against the reference on a CUDA GPU (skipped without one).

Errors are ||out - ref|| / ||ref|| with the reference run in float32 on the same (upcast) inputs:
within 1e-2 for bf16 and 2e-3 for fp16. Inputs are fresh random normals on every run; outputs land in
memory poisoned with NaN beforehand, so a row the kernels never write fails the test.
"""

from __future__ import annotations

import pytest
import torch
from slkernels import SuperlinearConfig, superlinear_attention

pytestmark = pytest.mark.gpu

TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-4}
SMALL = SuperlinearConfig(sw_index=7, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                          forward_factor=1.0)  # W = 63: spans matter from short lengths on
CONFIGS = {"small": SMALL, "balanced": SuperlinearConfig.balanced(), "released": SuperlinearConfig.released()}


def _poison() -> None:
    """Fill freed allocator blocks with NaN so that unwritten outputs read NaN, not stale numbers."""
    free = torch.cuda.mem_get_info()[0]
    blob = torch.empty(min(free // 4, 1 << 31) // 4, dtype=torch.float32, device="cuda")
    blob.fill_(float("nan"))
    del blob


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.isfinite(a).all(), "non-finite values (unwritten or NaN rows)"
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _make(batch, hq, hkv, lq, lkv, dim, dtype, grad=False):
    g = torch.Generator(device="cuda").manual_seed(torch.seed() % (2**31))
    def rnd(*shape):
        return torch.randn(*shape, device="cuda", dtype=dtype, generator=g).requires_grad_(grad)
    return rnd(batch, hq, lq, dim), rnd(batch, hkv, lkv, dim), rnd(batch, hkv, lkv, dim), rnd(batch, hq, lq, dim)


def _reference(q, k, v, qs, cfg, **kw):
    up = [x.detach().float().requires_grad_(x.requires_grad) for x in (q, k, v, qs)]
    return up, superlinear_attention(*up, cfg, backend="reference", **kw)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("heads", [(16, 1), (8, 2), (4, 4)])
@pytest.mark.parametrize("length", [257, 1000])
def test_forward_grid(dtype, dim, heads, length):
    hq, hkv = heads
    q, k, v, qs = _make(2, hq, hkv, length, length, dim, dtype)
    mask = torch.ones(2, length, dtype=torch.long, device="cuda")
    mask[1, : length // 3] = 0
    _poison()
    with torch.no_grad():
        out = superlinear_attention(q, k, v, qs, SMALL, attention_mask=mask, backend="triton")
        _, ref = _reference(q, k, v, qs, SMALL, attention_mask=mask)
    assert _rel(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cfg_name", ["small", "balanced", "released"])
@pytest.mark.parametrize("length", [4097, 16384, 65536])
def test_forward_long_sampled_rows(dtype, cfg_name, length):
    """Whole-sequence kernel output; the reference on sampled rows (each row is independent)."""
    cfg = CONFIGS[cfg_name]
    q, k, v, qs = _make(1, 16, 1, length, length, 128, dtype)
    _poison()
    with torch.no_grad():
        out = superlinear_attention(q, k, v, qs, cfg, backend="triton")
        rows = torch.cat([torch.arange(length - 64, length, device="cuda"),
                          torch.randperm(length - 64, device="cuda")[:192]]).sort().values
        _, ref = _reference(q[:, :, rows], k, v, qs[:, :, rows], cfg, cache_position=rows)
    assert _rel(out[:, :, rows], ref) < TOL[dtype]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_prefill_matches_whole(dtype):
    length, chunk = 6000, 2048
    q, k, v, qs = _make(1, 16, 1, length, length, 128, dtype)
    with torch.no_grad():
        whole = superlinear_attention(q, k, v, qs, SMALL, backend="triton")
        parts = []
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            pos = torch.arange(start, stop, device="cuda")
            parts.append(superlinear_attention(q[:, :, start:stop], k[:, :, :stop], v[:, :, :stop],
                                               qs[:, :, start:stop], SMALL, cache_position=pos, backend="triton"))
        _, ref = _reference(q, k, v, qs, SMALL)
    assert _rel(torch.cat(parts, dim=2), ref) < TOL[dtype]
    assert _rel(whole, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("cfg_name,length,heads", [("small", 1000, (16, 1)), ("small", 777, (8, 2)),
                                                   ("balanced", 4096, (16, 1))])
def test_gradients(dtype, dim, cfg_name, length, heads):
    cfg = CONFIGS[cfg_name]
    hq, hkv = heads
    q, k, v, qs = _make(2, hq, hkv, length, length, dim, dtype, grad=True)
    mask = torch.ones(2, length, dtype=torch.long, device="cuda")
    mask[0, :100] = 0
    grad = torch.randn(2, hq, length, dim, device="cuda", dtype=dtype)
    _poison()
    out = superlinear_attention(q, k, v, qs, cfg, attention_mask=mask, backend="triton")
    out.backward(grad)
    up, ref = _reference(q, k, v, qs, cfg, attention_mask=mask)
    ref.backward(grad.float())
    assert _rel(out, ref) < TOL[dtype]
    for name, mine, theirs in zip(["dq", "dk", "dv", "dq_search"], (q, k, v, qs), up):
        err = _rel(mine.grad, theirs.grad)
        assert err < TOL[dtype], f"{name}: {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cfg_name", ["small", "released"])
@pytest.mark.parametrize("length", [5000, 65536])
def test_decode(dtype, cfg_name, length):
    cfg = CONFIGS[cfg_name]
    q, k, v, qs = _make(2, 32, 2, 1, length, 128, dtype)
    mask = torch.ones(2, length, dtype=torch.long, device="cuda")
    mask[1, :37] = 0
    _poison()
    with torch.no_grad():
        out = superlinear_attention(q, k, v, qs, cfg, attention_mask=mask, backend="triton")
        _, ref = _reference(q, k, v, qs, cfg, attention_mask=mask)
    assert _rel(out, ref) < TOL[dtype]


def test_decode_cuda_graph():
    """The decode path captured once, replayed for new positions and new data."""
    from slkernels.triton_ops.decode import superlinear_decode

    cfg, length = SuperlinearConfig.released(), 20000
    q, k, v, qs = _make(1, 32, 2, 1, length, 128, torch.bfloat16)
    pos = torch.tensor([9000], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5
    superlinear_decode(q, k, v, qs, cfg, pos, s0, scale)  # warm-up: compiles, caches tables
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = superlinear_decode(q, k, v, qs, cfg, pos, s0, scale)
    for p in (9000, 15000, length - 1):
        pos.fill_(p)
        for x in (q, qs):
            x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            _, ref = _reference(q, k, v, qs, cfg, cache_position=pos.clone())
        assert _rel(out, ref) < TOL[torch.bfloat16]


def test_public_decode_with_mask_and_position_is_graph_capturable():
    """superlinear_attention itself (checks included) can be captured: no host reads during capture."""
    cfg, length = SuperlinearConfig.released(), 12000
    q, k, v, qs = _make(2, 32, 2, 1, length, 128, torch.bfloat16)
    pos = torch.tensor([7000], device="cuda")
    mask = torch.ones(2, length, dtype=torch.long, device="cuda")
    mask[1, :300] = 0

    def step():
        return superlinear_attention(q, k, v, qs, cfg, cache_position=pos, attention_mask=mask)

    with torch.no_grad():
        step()  # warm-up outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()
    for p in (7000, length - 1):
        pos.fill_(p)
        qs.copy_(torch.randn_like(qs))
        graph.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            _, ref = _reference(q, k, v, qs, cfg, cache_position=pos.clone(), attention_mask=mask)
        assert _rel(out, ref) < TOL[torch.bfloat16]


def test_auto_picks_triton_on_cuda():
    from slkernels import available_backends
    from slkernels.api import resolve_backend
    from slkernels.inputs import check_inputs

    q, k, v, qs = _make(1, 16, 1, 300, 300, 64, torch.bfloat16)
    assert "triton" in available_backends()
    assert resolve_backend(check_inputs(q, k, v, qs, SMALL, None, None, None)) == "triton"
    with torch.no_grad():
        auto = superlinear_attention(q, k, v, qs, SMALL)
        tri = superlinear_attention(q, k, v, qs, SMALL, backend="triton")
    # The forward accumulates spans with float32 atomics: equal up to summation order, not bit for bit.
    assert _rel(auto, tri) < 1e-3
