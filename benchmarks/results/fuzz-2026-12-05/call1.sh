#!/bin/bash
# One device call: the randomised row-by-row check of the Triton backend (benchmarks/fuzz_triton.py), then the
# decode GPU tests (the decode path's window chunks now stop at the cache's length).
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
timeout 400 python -u benchmarks/fuzz_triton.py --minutes 5.5 --seed 0 --out "$OUT" > "$OUT/fuzz.log" 2>&1
echo "fuzz rc $?"
grep -c "^ok" "$OUT/fuzz.log"; grep "^FAIL\|cases" "$OUT/fuzz.log" | tail -30
timeout 150 python -u -m pytest -q -rf -p no:cacheprovider tests/test_triton_gpu.py -k decode > "$OUT/gpu-tests.log" 2>&1
echo "tests rc $?"; tail -5 "$OUT/gpu-tests.log"
