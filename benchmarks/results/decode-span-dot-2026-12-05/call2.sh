#!/bin/bash
# A second device call, if call1's timings favour a variant: the randomised row-by-row check of decode cases with a
# span's chunks on the tensor cores everywhere (GQA 1:1-16:1, D 64-256, fp16 / bf16 / fp32, padding, graph replays
# with other contents), then the generation tests through converted models with SPAN_DOT=None.
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
timeout 330 python -u benchmarks/fuzz_triton.py --kinds decode --set "SPAN_DOT=True" --minutes 5 --seed 720000 \
  --out "$OUT" > "$OUT/fuzz.log" 2>&1; echo "fuzz rc $?"; grep "^FAIL\|cases" "$OUT/fuzz.log" | tail -20
(cd tests && timeout 200 python -c "
import sys, pytest, slkernels.triton_ops.decode as d
d.SPAN_DOT = None
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--rootdir', '$PWD', '-c', '/dev/null', '-m', 'gpu',
                      'test_surgery_attention.py']))
") 2>&1 | tail -3 | tee "$OUT/gpu-tests-generation.log"
