"""Same-run comparisons of kernel variants (CUDA events, median of 5 runs), for benchmarks/NOTES.md.

    python benchmarks/compare_passes.py [--packages slkernels,OTHER] [--loads off,on] [--forward] [LENGTH ...]
                                        (default 65536 262144; --loads: K/V load variants to time;
                                        --forward: no backward)

For every package named (a copy of slkernels importable under another name gives a before/after in one
process) it times the search and the whole forward and backward, the attention passes reading K/V with
plain loads or through tensor descriptors (`attend.DESCRIPTORS`). Per-pass timings and tilings are
`profile_passes.py`'s job.
"""

from __future__ import annotations

import functools
import importlib
import sys

import profile_passes  # this folder is on sys.path when the script runs
import torch
from slkernels import SuperlinearConfig

timed = functools.partial(profile_passes.timed, reps=5)


def whole(package: str, cfg: SuperlinearConfig, length: int, data, loads: tuple[str, ...], backward: bool) -> None:
    fn = importlib.import_module(f"{package}.triton_ops.function")
    search = importlib.import_module(f"{package}.triton_ops.search")
    switch = getattr(importlib.import_module(f"{package}.triton_ops.attend"), "DESCRIPTORS", None)
    q, k, v, qs, pos, s0 = data
    scale = 128**-0.5
    timed(f"[{package}] search", lambda: search.search_topk(qs, k, cfg, pos, s0, length))
    default = switch[0] if switch else None
    for mode in loads if switch else (None,):
        if switch:
            switch[0] = mode
        label = f"[{package}]" + (f" K/V descriptors {mode}" if mode else "")
        timed(f"{label} whole forward", lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length))
        timed(f"{label} whole forward, no gradient",
              lambda: fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length, False))
        if not backward:
            continue
        out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        grad = torch.randn_like(out)
        timed(f"{label} whole backward", lambda grad=grad, saved=saved: fn.backward_pass(grad, q, k, v, qs, saved, scale))
        del out, saved, grad
    if switch:
        switch[0] = default


def main() -> None:
    args = sys.argv[1:]
    packages, loads = ["slkernels"], ("off", "on")
    if "--packages" in args:
        i = args.index("--packages")
        packages = args[i + 1].split(",")
        del args[i : i + 2]
    if "--loads" in args:
        i = args.index("--loads")
        loads = tuple(args[i + 1].split(","))
        del args[i : i + 2]
    backward = "--forward" not in args
    lengths = [int(x) for x in args if x != "--forward"] or [65536, 262144]
    settings = [("released", length) for length in lengths] + [("balanced", lengths[-1])]
    for name, length in settings:
        cfg = getattr(SuperlinearConfig, name)()
        print(f"{name} L={length} on {torch.cuda.get_device_name()}", flush=True)
        data = profile_passes.inputs(length)
        for package in packages:
            whole(package, cfg, length, data, loads, backward)
        del data


if __name__ == "__main__":
    main()
