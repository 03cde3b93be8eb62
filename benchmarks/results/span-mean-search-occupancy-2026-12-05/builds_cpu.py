"""Registers, spilled stack and shared memory of the search's builds for sm_90, compiled on the CPU (no GPU), and
the warps an SM could hold from those two alone (65536 registers, 228 KB of shared memory with 1 KB reserved a
program, at most 32 programs). Writes the table that builds-cpu.txt holds.

    python builds_cpu.py   # from the repository root
"""

import os
import re
import sys
import tempfile

sys.path.insert(0, "benchmarks")
import sass_report as sr  # noqa: E402

BUILDS = [  # (search, anchors a block, warps, stages, register cap)
    ("span_mean", 16, 1, 2, None), ("span_mean", 8, 1, 2, None), ("span_mean", 8, 1, 3, None),
    ("span_mean", 8, 1, 1, 128), ("span_mean", 32, 2, 2, None), ("span_mean", 32, 2, 2, 128),
    ("span_mean", 16, 2, 1, 128), ("span_mean", 16, 2, 2, None), ("hi_only", 16, 1, 2, None),
    ("hi_only", 16, 1, 1, None), ("hi_only", 16, 2, 2, None), ("hi_only", 32, 1, 2, None), ("hi_only", 32, 2, 2, None),
    ("hi_only", 32, 4, 2, None), ("hi_only", 16, 2, 1, None), ("hi_only", 16, 1, 2, 64), ("hi_only", 8, 1, 2, None)]

for search, block_n, warps, stages, cap in BUILDS:
    fn, args, consts = sr.kernel_and_args("search:" + search, 262144, (0, block_n, warps, stages))
    compiled = sr.compile_for_sm90(fn, args, consts, warps, stages, cap)
    path = os.path.join(tempfile.mkdtemp(), "search.cubin")
    with open(path, "wb") as f:
        f.write(compiled.asm["cubin"])
    usage = sr._cuobjdump("--dump-resource-usage", path)
    regs, stack = (int(re.search(rf"{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK"))
    shared = compiled.metadata.shared
    programs = min(65536 // (regs * 32 * warps), 233472 // (shared + 1024), 32)
    print(f"{search:9} BN {block_n:2} warps {warps} stages {stages} cap {cap}: {regs} registers, {stack} B spilled, "
          f"{shared} B shared, {programs * warps} warps an SM")
