"""The decode step as one launch (this tree's `slkernels`) against the three launches of commit 72fc727 (its
`kernels/` copied as the package `slk_old`), in one process on one card: one decode row (B = 1, 32 query / 2 KV
heads, D = 128, bf16) at 16K / 64K / 1M keys, released and balanced, each step a CUDA-graph replay
(`measure_graph`: median of 100), the two codes alternating twice, dense SDPA over every key beside them; the
largest difference between the two outputs; then the one-launch step under other search pieces, chunk tilings
and combine slices (released only). Prints one JSON line per measurement."""

from __future__ import annotations

import dataclasses
import json
import sys
from unittest import mock

import slk_old
import slkernels
import torch
from slk_old.triton_ops import decode as old_decode
from slkernels.triton_ops import decode as new_decode

from slconvert.benchmark.timing import measure_graph

LENGTHS = [int(x) for x in sys.argv[1:]] or [16384, 65536, 1 << 20]
SWEEPS = [("SEARCH_SPLIT", 32), ("SEARCH_SPLIT", 64), ("SEARCH_SPLIT", 256), ("DECODE_TILE", (64, 16, 1, 3)),
          ("DECODE_TILE", (256, 16, 1, 3)), ("DECODE_TILE", (128, 32, 1, 3)), ("DECODE_TILE", (128, 16, 1, 2)),
          ("COMBINE_TILE", (32, 1)), ("COMBINE_TILE", (64, 1))]


def emit(**row):
    print(json.dumps(row), flush=True)


def one_length(setting: str, cfg_new, cfg_old, length: int) -> None:
    torch.manual_seed(length)
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.tensor([length - 1], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5

    def new():
        return new_decode.superlinear_decode(q, k, v, qs, cfg_new, pos, s0, scale)

    def old():
        return old_decode.superlinear_decode(q, k, v, qs, cfg_old, pos, s0, scale)

    def dense():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)

    diff = float((new().float() - old().float()).abs().max())
    emit(setting=setting, length=length, max_diff_new_old=diff,
         new_vs_dense=float((new().float() - dense().float()).abs().max()))
    for rep in range(2):
        for name, f in (("one launch", new), ("three launches (72fc727)", old), ("dense SDPA", dense)):
            emit(setting=setting, length=length, rep=rep, step=name, ms=measure_graph(f))
    if setting == "released":
        base = new().float()
        for name, value in SWEEPS:
            with mock.patch.object(new_decode, name, value):
                d = float((new().float() - base).abs().max())
                emit(setting=setting, length=length, step="one launch", variant=f"{name}={value}",
                     ms=measure_graph(new), max_diff=d)
    torch.cuda.synchronize()
    emit(setting=setting, length=length, counters_zero=not bool(new_decode._COUNTERS[q.device].any()))


def main() -> None:
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB", flush=True)
    for setting in ("released", "balanced"):
        cfg_new = getattr(slkernels.SuperlinearConfig, setting)()
        cfg_old = slk_old.SuperlinearConfig(**dataclasses.asdict(cfg_new))
        for length in LENGTHS:
            one_length(setting, cfg_new, cfg_old, length)


if __name__ == "__main__":
    main()
