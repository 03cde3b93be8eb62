"""Where a decode step's time goes with this tree's kernels: one row (B = 1, 32 query / 2 KV heads, D = 128, bf16)
at 16K / 64K / 1M keys, released and balanced, as CUDA-graph replays (median of 100): the search alone, the search
and the partial kernel (the combine's launch skipped), the whole step, dense SDPA. Prints one JSON line each."""

from __future__ import annotations

import json
from unittest import mock

import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import decode

from slconvert.benchmark.timing import measure_graph


class _Skipped:
    def __getitem__(self, grid):
        return lambda *args, **kw: None


def one_length(setting: str, length: int) -> None:
    cfg = getattr(SuperlinearConfig, setting)()
    torch.manual_seed(0)
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos, s0 = torch.tensor([length - 1], device="cuda"), torch.zeros(1, dtype=torch.int64, device="cuda")

    def step():
        return decode.superlinear_decode(q, k, v, qs, cfg, pos, s0, 128**-0.5)

    def no_combine():
        with mock.patch.object(decode, "_decode_combine_kernel", _Skipped()):
            return step()

    parts = {"search": lambda: decode.search_pieces(qs, k, cfg, pos, s0, length),
             "search + partial": no_combine, "whole step": step,
             "dense SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=128**-0.5,
                                                                                    enable_gqa=True)}
    for rep in range(2):
        for name, f in parts.items():
            print(json.dumps(dict(setting=setting, length=length, step=name, rep=rep, ms=measure_graph(f))), flush=True)


def main() -> None:
    print(json.dumps({"card": torch.cuda.get_device_name()}), flush=True)
    for setting in ("released", "balanced"):
        for length in (16384, 65536, 1 << 20):
            one_length(setting, length)


if __name__ == "__main__":
    main()
