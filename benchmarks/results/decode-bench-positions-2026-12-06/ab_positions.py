"""Per decode step in a CUDA graph of 16 steps over 16 caches (the bench's protocol): the public call as the bench
made it before (no positions: each step's call makes its own), with one positions tensor shared by the steps and
check_values=False (what a converted model's layer passes; the bench now), and the backend's decode with positions
and s0 given (`compare_passes.py --decode`'s call); dense SDPA beside them. Rounds alternate the variants.
Writes one JSON line per (setting, length, variant, round) to stdout."""

import json
import sys
from functools import partial

import torch
import torch.nn.functional as F
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.triton_ops.decode import superlinear_decode

from slconvert.benchmark.timing import measure_graph

LENGTHS = [int(x) for x in sys.argv[1:]] or [16384, 32768, 65536]


def variants(cfg, pos, s0):
    return {
        "public, no positions (bench before)": lambda q, k, v, qs: superlinear_attention(
            q, k, v, qs, cfg, backend="triton"),
        "public, shared positions, check_values=False (bench now)": lambda q, k, v, qs: superlinear_attention(
            q, k, v, qs, cfg, cache_position=pos, backend="triton", check_values=False),
        "backend decode, positions and s0 given": lambda q, k, v, qs: superlinear_decode(
            q, k, v, qs, cfg, pos, s0, 128 ** -0.5),
        "dense SDPA": lambda q, k, v, qs: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
    }


def steps(fn, layers):
    return [fn(*x) for x in layers]


def one_length(setting: str, length: int) -> None:
    cfg = getattr(SuperlinearConfig, setting)()

    def mk(rows):
        return torch.randn(1, 32 if rows == 1 else 2, rows, 128, device="cuda", dtype=torch.bfloat16)

    layers = [(mk(1), mk(length), mk(length), mk(1)) for _ in range(16)]
    calls = variants(cfg, torch.tensor([length - 1], device="cuda"), torch.zeros(1, dtype=torch.int64, device="cuda"))
    ref = calls["backend decode, positions and s0 given"](*layers[0])
    for name, fn in calls.items():
        if not name.startswith("dense"):
            diff = (fn(*layers[0]).float() - ref.float()).abs().max().item()
            print(json.dumps({"setting": setting, "length": length, "variant": name, "max_diff": diff}))
    for rnd in range(3):
        for name, fn in calls.items():
            ms = measure_graph(partial(steps, fn, layers))
            print(json.dumps({"setting": setting, "length": length, "variant": name, "round": rnd,
                              "us_per_step": None if ms is None else 1000 * ms / len(layers)}), flush=True)


torch.manual_seed(0)
for setting in ("released", "balanced"):
    for length in LENGTHS:
        one_length(setting, length)
