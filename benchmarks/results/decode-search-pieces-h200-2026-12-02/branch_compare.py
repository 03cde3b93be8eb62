"""The decode step with the window's chunks on a branch of the CUDA graph (this tree's `slkernels`) against commit 72fc727 (its
`kernels/` copied as the package `slk_old`), in one process on one card: one decode row (B = 1, 32 query / 2 KV
heads, D = 128, bf16) at 16K / 64K / 1M keys, released and balanced, each step a CUDA-graph replay
(`measure_graph`: median of 100), the two codes alternating twice, dense SDPA over every key beside them; the
largest difference between the two outputs; then this tree's step without the branch, and under other search
pieces with the branch on and off. Prints one JSON line per measurement."""

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
SWEEPS = [("WINDOW_BRANCH", False), ("SEARCH_SPLIT", (128, 1 << 30)), ("SEARCH_SPLIT", (64, 32)),
          ("SEARCH_SPLIT", (32, 64))]


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
        for name, f in (("window branch", new), ("72fc727", old), ("dense SDPA", dense)):
            emit(setting=setting, length=length, rep=rep, step=name, ms=measure_graph(f))
    base = new().float()
    for branch in (True, False):
        for name, value in SWEEPS:
            if name == "WINDOW_BRANCH" and not branch:
                continue
            with mock.patch.object(new_decode, name, value), mock.patch.object(new_decode, "WINDOW_BRANCH", branch):
                d = float((new().float() - base).abs().max())
                emit(setting=setting, length=length, step="this tree", branch=branch, variant=f"{name}={value}",
                     ms=measure_graph(new), max_diff=d)


def main() -> None:
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB", flush=True)
    for setting in ("released", "balanced"):
        cfg_new = getattr(slkernels.SuperlinearConfig, setting)()
        cfg_old = slk_old.SuperlinearConfig(**dataclasses.asdict(cfg_new))
        for length in LENGTHS:
            one_length(setting, cfg_new, cfg_old, length)


if __name__ == "__main__":
    main()
