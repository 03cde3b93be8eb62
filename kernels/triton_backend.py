"""The Triton kernels as backend "triton" of `slkernels.superlinear_attention`: `triton_attention` and `supports`.

Imported lazily and registered by `slkernels.api` (Triton is not needed by the reference). The backend serves CUDA
tensors of float16, bfloat16 or float32 with a head dim in `SUPPORTED_HEAD_DIMS`, with either search key
("anchor" or "span_mean", a compile-time switch of the search and gate-backward kernels); on the CPU only under
the Triton interpreter (``TRITON_INTERPRET=1`` or ``SLKERNELS_TRITON_INTERPRET=1``), which CI uses to run
the very same kernels on tiny shapes. A few query rows without gradients (decode) take the decode path,
which never reads a value back to the host, so `superlinear_attention` may replay it from a CUDA graph on a static
cache (`decodes`; `slkernels.decode_graphs`).
"""

from __future__ import annotations

import os

if os.environ.get("SLKERNELS_TRITON_INTERPRET") == "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from .inputs import AttentionInputs  # noqa: E402
from .triton_ops.common import SUPPORTED_HEAD_DIMS, interpreting  # noqa: E402
from .triton_ops.decode import DECODE_MAX_ROWS, superlinear_decode  # noqa: E402
from .triton_ops.function import superlinear_prefill  # noqa: E402
from .triton_ops.prefix import KeySums  # noqa: E402

__all__ = ["triton_attention", "supports", "decodes"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def supports(inp: AttentionInputs) -> bool:
    q = inp.q
    if q.dtype not in _DTYPES or q.shape[-1] not in SUPPORTED_HEAD_DIMS or inp.v.shape[-1] != q.shape[-1]:
        return False
    if q.device.type == "cuda":
        return True
    return q.device.type == "cpu" and interpreting()


def decodes(inp: AttentionInputs) -> bool:
    """Whether the call takes the decode path: a few rows, no gradient to record. Such a call reads no value back
    to the host, and per call nothing but its inputs and the cache, so `superlinear_attention` may replay it from a
    CUDA graph (the backend's `replayable` predicate)."""
    if inp.q.shape[2] > DECODE_MAX_ROWS:
        return False
    return not (torch.is_grad_enabled() and any(x.requires_grad for x in (inp.q, inp.k, inp.v, inp.q_search)))


def triton_attention(inp: AttentionInputs) -> torch.Tensor:
    q, k, v, qs = inp.q, inp.k, inp.v, inp.q_search
    if decodes(inp):
        return superlinear_decode(q, k, v, qs, inp.config, inp.cache_position, inp.first_real, inp.scale,
                                  _key_sums(inp))
    return superlinear_prefill(q, k, v, qs, inp.config, inp.cache_position, inp.first_real, inp.scale,
                               key_sums=_key_sums(inp))


def _key_sums(inp: AttentionInputs) -> KeySums | None:
    """The caller's kept running sums of the span-mean key (made on first use), or None to build them per call. A
    prefill without gradients builds them there too, so that the decode steps after it find their arrays made (a
    compiled decode step must never make them: `slconvert.attention`)."""
    if inp.state is None or not inp.state.keeps(inp.config, inp.k):
        return None
    if inp.state.key_sums is None:
        inp.state.key_sums = KeySums()
    return inp.state.key_sums
