#!/bin/bash
# Second device call: the randomised check with few compile-time variants (--narrow), so that the call's minutes go
# to cases rather than to compiling each draw's kernels.
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
timeout 450 python -u benchmarks/fuzz_triton.py --narrow --minutes 7 --seed 100000 --out "$OUT" > "$OUT/fuzz.log" 2>&1
echo "fuzz rc $?"
grep -c "^ok" "$OUT/fuzz.log"; grep "^FAIL\|cases" "$OUT/fuzz.log" | tail -30
