"""Host side of a prefill without gradients: what one call runs on the host, whatever the device.

At 16K tokens the forward's GPU work takes about as long as dense SDPA's, so the torch operations between the
Triton launches decide whether it is faster (benchmarks/NOTES.md, item 28: the window entries' two dozen
operations and a sort made it 0.75x dense). These tests hold that work down on the CPU with the kernels replaced by
recorders (the GPU code path, no device needed): six launches, no read-back, and few torch operations that
launch a kernel of their own.
"""

from __future__ import annotations

import pytest
import torch
from dispatch_ops import LaunchRecorder, OpCounter
from slkernels import SuperlinearConfig, superlinear_attention


@pytest.fixture
def recorded(monkeypatch):
    """The Triton backend's prefill with its kernels recorded instead of run, as on a GPU (no interpreter)."""
    from slkernels import triton_backend
    from slkernels.api import _BACKENDS, available_backends
    from slkernels.triton_ops import attend, search, span_lists, window_lists

    available_backends()  # registers the real backends first, so that the stub below is undone to them
    launches = []
    for module, name in ((search, "_search_kernel"), (span_lists, "_span_lists_kernel"),
                         (span_lists, "_finish_lists_kernel"), (window_lists, "_window_lists_kernel"),
                         (attend, "_entry_kernel")):
        monkeypatch.setattr(module, "interpreting", lambda: False)
        monkeypatch.setattr(module, name, LaunchRecorder(name, launches))
    monkeypatch.setitem(_BACKENDS, "triton", (triton_backend.triton_attention, lambda inp: True))
    return launches


@pytest.mark.parametrize("grad", [False, True])
def test_prefill_launches_six_kernels_and_few_torch_kernels(recorded, grad):
    """A 2500-row prefill (8 / 2 heads): search, span lists and their finish, the span pass, window lists and the
    window pass; besides them four torch operations that are not views or plain allocations (the default positions,
    the span lists' one flat sort, two scalar buffers of the attention passes; with gradients the positions' sort
    too) and no read-back. Before the window lists came from one launch the row geometry and window entries ran
    about twenty-five more; before the span lists' finish their key split, count and two gathers five more; before
    the span lists' kernel filled the span log-sum-exps and the window lists' kernel wrote its counts, two fills."""
    cfg = SuperlinearConfig.released()
    gen = torch.Generator().manual_seed(0)
    q, qs = (torch.randn(1, 8, 2500, 32, generator=gen).requires_grad_(grad) for _ in range(2))
    k, v = (torch.randn(1, 2, 2500, 32, generator=gen).requires_grad_(grad) for _ in range(2))
    superlinear_attention(q, k, v, qs, cfg, backend="triton")  # warm-up: the geometry tables and buckets
    recorded.clear()
    ops = OpCounter()
    with ops, torch.set_grad_enabled(grad):
        superlinear_attention(q, k, v, qs, cfg, backend="triton")
    # the span pass is launched as soon as its lists are ready; the window's lists only after it
    assert [name for name, _ in recorded] == ["_search_kernel", "_span_lists_kernel", "_finish_lists_kernel",
                                              "_entry_kernel", "_window_lists_kernel", "_entry_kernel"]
    assert ops.host_reads() == {}, ops.host_reads()
    launching = ops.launches()
    assert sum(launching.values()) <= (5 if grad else 4), launching
