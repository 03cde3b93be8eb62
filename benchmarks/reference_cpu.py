"""Time and peak memory of the PyTorch reference forward on this CPU.

Default shape: L = 16K, H_q = 4, H_kv = 2, D = 64, released setting (target: <= 10 s on 2 cores, <= 1 GB).
Writes a JSON line to --out when given.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch
from slkernels import SuperlinearConfig, superlinear_attention


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--heads-q", type=int, default=4)
    parser.add_argument("--heads-kv", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--setting", choices=["released", "balanced"], default="released")
    parser.add_argument("--out")
    args = parser.parse_args()

    cfg = SuperlinearConfig.released() if args.setting == "released" else SuperlinearConfig.balanced()
    torch.manual_seed(0)
    shape_q = (1, args.heads_q, args.length, args.dim)
    shape_kv = (1, args.heads_kv, args.length, args.dim)
    q, qs = torch.randn(shape_q), torch.randn(shape_q)
    k, v = torch.randn(shape_kv), torch.randn(shape_kv)
    with torch.no_grad():
        superlinear_attention(q[:, :, -64:], k, v, qs[:, :, -64:], cfg, backend="reference")  # warm-up
        base_mb = _rss_mb()
        start = time.perf_counter()
        out = superlinear_attention(q, k, v, qs, cfg, backend="reference")
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert torch.isfinite(out).all()
    result = {
        "backend": "reference",
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "setting": args.setting,
        "length": args.length,
        "heads_q": args.heads_q,
        "heads_kv": args.heads_kv,
        "dim": args.dim,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_above_inputs_mb": round(peak_mb - base_mb, 1),
    }
    print(
        f"reference forward, {result['device']}, L={args.length} H_q={args.heads_q} H_kv={args.heads_kv} "
        f"D={args.dim} {args.setting}: {seconds:.2f} s, peak RSS {peak_mb:.0f} MB "
        f"({peak_mb - base_mb:.0f} MB above inputs)"
    )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
