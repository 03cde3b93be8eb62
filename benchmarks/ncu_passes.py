"""One forward and backward of the Triton kernels, for Nsight Compute's hardware counters.

    ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section WarpStateStats -k regex:_entry_kernel|_dkdv_kernel|_search_kernel \
        python benchmarks/ncu_passes.py [released|balanced] [LENGTH]

A first untimed pass compiles the kernels; the profiled launches follow it, in the order search, window,
span (forward), fused span dq, window dq, dk/dv window, dk/dv spans (backward).
"""

from __future__ import annotations

import sys

import profile_passes  # this folder is on sys.path when the script runs
import torch
from slkernels import SuperlinearConfig
from slkernels.triton_ops import function as fn


def main() -> None:
    name = next((x for x in sys.argv[1:] if x in ("released", "balanced")), "released")
    length = next((int(x) for x in sys.argv[1:] if x.isdigit()), 65536)
    cfg = getattr(SuperlinearConfig, name)()
    q, k, v, qs, pos, s0 = profile_passes.inputs(length)
    scale = 128**-0.5
    for _ in range(2):  # the first round compiles
        out, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
        fn.backward_pass(torch.randn_like(out), q, k, v, qs, saved, scale)
        torch.cuda.synchronize()
    print(f"{name} L={length} on {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
