"""Decode's partial kernel under each program order (`decode.CHUNK_ORDER` 0-3; 0 is commit 8104ba6's), without and
with programmatic dependent launch (`decode.DECODE_PDL` True), in one process on one card: one decode row (B = 1,
32 query / 2 KV heads, D = 128, bf16) at 16K / 64K / 1M keys, released and balanced, each step a CUDA-graph replay
(`measure_graph`: median of 100), every variant timed twice in turn, dense SDPA beside them; the largest difference
of each variant's output from order 0's. Prints one JSON line per measurement."""

from __future__ import annotations

import json
import sys
from unittest import mock

import slkernels
import torch
from slkernels.triton_ops import decode

from slconvert.benchmark.timing import measure_graph

LENGTHS = [int(x) for x in sys.argv[1:]] or [16384, 65536, 1 << 20]
VARIANTS = [(order, pdl) for pdl in (False, True) for order in (0, 1, 2, 3)]


def emit(**row):
    print(json.dumps(row), flush=True)


def one_length(setting: str, cfg, length: int) -> None:
    torch.manual_seed(length)
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.tensor([length - 1], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5

    def step():
        return decode.superlinear_decode(q, k, v, qs, cfg, pos, s0, scale)

    with mock.patch.object(decode, "CHUNK_ORDER", 0):
        base = step().float()
    for rep in range(2):
        for order, pdl in VARIANTS:
            with mock.patch.object(decode, "CHUNK_ORDER", order), mock.patch.object(decode, "DECODE_PDL", pdl):
                diff = float((step().float() - base).abs().max()) if rep == 0 else None
                emit(setting=setting, length=length, rep=rep, order=order, pdl=pdl, ms=measure_graph(step),
                     max_diff=diff)
        emit(setting=setting, length=length, rep=rep, step="dense SDPA", ms=measure_graph(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)))


def main() -> None:
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB", flush=True)
    for setting in ("released", "balanced"):
        for length in LENGTHS:
            one_length(setting, getattr(slkernels.SuperlinearConfig, setting)(), length)


if __name__ == "__main__":
    main()
