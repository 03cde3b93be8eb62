"""Same-run comparisons of kernel variants (CUDA events, median of 5 runs), for benchmarks/NOTES.md.

    python benchmarks/compare_passes.py [--packages slkernels,OTHER] [--whole-only] [LENGTH ...]
                                                                                  (default 65536 262144)

For every package named (a copy of slkernels importable under another name gives a before/after in one
process) it times the search and the whole forward and backward, the attention passes reading K/V with
plain loads or through tensor descriptors (`attend.DESCRIPTORS`). Unless `--whole-only`, for slkernels it also
times each attention pass both ways, and the span forward and dk/dv passes under several tilings.
"""

from __future__ import annotations

import functools
import importlib
import sys

import profile_passes  # this folder is on sys.path when the script runs
import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import attend
from slkernels.triton_ops.attend_bwd import dkdv

timed = functools.partial(profile_passes.timed, reps=5)

DKDV_TILES = [(64, 64, 4, 3), (32, 64, 4, 3), (32, 64, 4, 4), (64, 64, 4, 4), (64, 32, 4, 3)]
SPAN_TILES = [(64, 64, 4, 3), (32, 64, 4, 3), (64, 32, 4, 3), (64, 32, 4, 4), (128, 32, 8, 3)]


def inputs(length: int):
    q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.arange(length, device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    return q, k, v, qs, pos, s0


def whole(package: str, cfg: SuperlinearConfig, length: int, data) -> None:
    fn = importlib.import_module(f"{package}.triton_ops.function")
    search = importlib.import_module(f"{package}.triton_ops.search")
    switch = getattr(importlib.import_module(f"{package}.triton_ops.attend"), "DESCRIPTORS", None)
    q, k, v, qs, pos, s0 = data
    scale = 128**-0.5
    timed(f"[{package}] search", lambda: search.search_topk(qs, k, cfg, pos, s0, length))
    default = switch[0] if switch else None
    for mode in ("off", "on") if switch else (None,):
        if switch:
            switch[0] = mode
        label = f"[{package}]" + (f" K/V descriptors {mode}" if mode else "")
        try:
            timed(f"{label} whole forward", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length))
        except Exception as exc:  # a variant the compiler rejects is reported, not fatal
            print(f"  {label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
            continue
        out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        grad = torch.randn_like(out)
        timed(f"{label} whole backward", lambda grad=grad, saved=saved: fn.backward_pass(grad, q, k, v, qs, saved, scale))
        del out, saved, grad
    if switch:
        switch[0] = default


def passes(cfg: SuperlinearConfig, length: int, data) -> None:
    from slkernels.triton_ops import function as fn

    q, k, v, qs, pos, s0 = data
    scale = 128**-0.5
    out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
    wins, spans = saved["wins"], saved["spans"]
    grad = torch.randn_like(out)
    acc = torch.zeros(q.shape, dtype=torch.float32, device="cuda")
    per_entry = torch.zeros_like(saved["lse_s"])
    ones = torch.ones_like(saved["lse_w"])[..., None]

    def span_forward(tiles=None):
        attend.run_entries(attend.MODE_FWD_SPAN, spans, q, k, v, scale, o_w=saved["o_w"], lse_w=saved["lse_w"],
                           acc=acc, gate=saved["gate"], out_e=per_entry, tiles=tiles)

    runs = {
        "window forward": lambda: attend.run_entries(attend.MODE_FWD_WINDOW, wins, q, k, v, scale,
                                                     o_w=saved["o_w"], lse_w=saved["lse_w"]),
        "span forward": span_forward,
        "span dq (fused)": lambda: attend.run_entries(attend.MODE_DQ_SPAN, spans, q, k, v, scale, do=grad,
                                                      lse_in=saved["lse_s"], coef=saved["gate"], delta=saved["lse_s"],
                                                      out_e=per_entry, dq=acc),
        "window dq": lambda: attend.run_entries(attend.MODE_DQ, wins, q, k, v, scale, do=grad, lse_in=ones,
                                                coef=ones, delta=ones, dq=acc),
    }
    for label, run in runs.items():
        for mode in ("off", "on"):
            attend.DESCRIPTORS[0] = mode
            timed(f"{label}, K/V descriptors {mode}", run)
    attend.DESCRIPTORS[0] = "on"
    for tiles in SPAN_TILES:
        timed(f"span forward {tiles}", lambda tiles=tiles: span_forward(tiles))
    dk = torch.zeros(k.shape, dtype=torch.float32, device="cuda")
    dv = torch.zeros_like(dk)
    for tiles in DKDV_TILES:
        timed(f"dkdv spans {tiles}", lambda tiles=tiles: dkdv(spans, q, k, v, grad, saved["lse_s"], saved["gate"],
                                                              saved["lse_s"], dk, dv, scale, True, tiles=tiles))
        timed(f"dkdv window {tiles}", lambda tiles=tiles: dkdv(wins, q, k, v, grad, ones, ones, ones, dk, dv, scale,
                                                               False, tiles=tiles))


def main() -> None:
    packages = ["slkernels"]
    args = sys.argv[1:]
    whole_only = "--whole-only" in args
    args = [a for a in args if a != "--whole-only"]
    if "--packages" in args:
        i = args.index("--packages")
        packages = args[i + 1].split(",")
        del args[i : i + 2]
    lengths = [int(x) for x in args] or [65536, 262144]
    settings = [("released", length) for length in lengths] + [("balanced", lengths[-1])]
    for name, length in settings:
        cfg = getattr(SuperlinearConfig, name)()
        print(f"{name} L={length} on {torch.cuda.get_device_name()}", flush=True)
        data = inputs(length)
        for package in packages:
            whole(package, cfg, length, data)
        if not whole_only:
            passes(cfg, length, data)
        del data


if __name__ == "__main__":
    main()
