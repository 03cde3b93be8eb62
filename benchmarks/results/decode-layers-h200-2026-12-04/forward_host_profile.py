"""Where the host time of the released forward goes (one layer, B=1, 32/2 heads, D=128, bf16, no gradient):
cProfile over 20 calls, each synchronised outside the profiled region, and every Triton launch's own host time by
kernel (JITFunction.run timed around). Prints the top functions by own time and by cumulative time."""
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict

import torch
import triton
from slkernels import SuperlinearConfig, superlinear_attention

length = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
torch.manual_seed(0)
q, qs = (torch.randn(1, 32, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
cfg = SuperlinearConfig.released()
launch_s, launch_n = defaultdict(float), defaultdict(int)
real_run = triton.runtime.jit.JITFunction.run


def timed_run(self, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        return real_run(self, *args, **kwargs)
    finally:
        launch_s[self.fn.__name__] += time.perf_counter() - t0
        launch_n[self.fn.__name__] += 1


with torch.no_grad():
    for _ in range(3):
        superlinear_attention(q, k, v, qs, cfg, backend="triton")
    torch.cuda.synchronize()
    walls = []
    prof = cProfile.Profile()
    for _ in range(20):
        t0 = time.perf_counter()
        prof.enable()
        superlinear_attention(q, k, v, qs, cfg, backend="triton")
        prof.disable()
        walls.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
    triton.runtime.jit.JITFunction.run = timed_run
    for _ in range(20):
        superlinear_attention(q, k, v, qs, cfg, backend="triton")
        torch.cuda.synchronize()
    triton.runtime.jit.JITFunction.run = real_run
print(f"length {length}: host per call (profiled) {1e3 * sorted(walls)[10]:.3f} ms")
print("Triton launches, host us per call:", {n: round(1e6 * s / 20, 1) for n, s in launch_s.items()},
      "launches per call:", {n: c // 20 for n, c in launch_n.items()})
for key in ("tottime", "cumulative"):
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats(key).print_stats(45)
    print(s.getvalue()[-9000:])
