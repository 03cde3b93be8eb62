"""Decode's partial kernel with every window's chunks first (this tree's `slkernels`) against commit 8104ba6 (its
`kernels/` copied as the package `slk_old`: window and span chunks interleaved), each with and without
programmatic dependent launch (`decode.DECODE_PDL`: True chains search, partial kernel and combine; "search", this
tree only, the first link alone), in one process on one card: one decode row (B = 1, 32 query / 2 KV heads, D = 128,
bf16) at 16K / 64K / 1M keys, released and balanced, each step a CUDA-graph replay (`measure_graph`: median of 100),
every variant timed twice in turn, dense SDPA beside them; the largest difference of each variant's output from this
tree's plain step. Prints one JSON line per measurement."""

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


def emit(**row):
    print(json.dumps(row), flush=True)


def one_length(setting: str, cfg_new, cfg_old, length: int) -> None:
    torch.manual_seed(length)
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.tensor([length - 1], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    scale = 128 ** -0.5

    def step(module, cfg, pdl):
        def f():
            with mock.patch.object(module, "DECODE_PDL", pdl):
                return module.superlinear_decode(q, k, v, qs, cfg, pos, s0, scale)
        return f

    variants = {"this tree": step(new_decode, cfg_new, False), "this tree, PDL search": step(new_decode, cfg_new, "search"),
                "this tree, PDL all": step(new_decode, cfg_new, True), "8104ba6": step(old_decode, cfg_old, False),
                "8104ba6, PDL all": step(old_decode, cfg_old, True)}
    base = variants["this tree"]().float()
    for name, f in variants.items():
        emit(setting=setting, length=length, step=name, max_diff=float((f().float() - base).abs().max()))
    for rep in range(2):
        for name, f in variants.items():
            with mock.patch.object(new_decode, "DECODE_PDL", False):
                emit(setting=setting, length=length, rep=rep, step=name, ms=measure_graph(f))
        emit(setting=setting, length=length, rep=rep, step="dense SDPA", ms=measure_graph(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)))


def main() -> None:
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB", flush=True)
    for setting in ("released", "balanced"):
        cfg_new = getattr(slkernels.SuperlinearConfig, setting)()
        cfg_old = slk_old.SuperlinearConfig(**dataclasses.asdict(cfg_new))
        for length in LENGTHS:
            one_length(setting, cfg_new, cfg_old, length)


if __name__ == "__main__":
    main()
