#!/bin/bash
# One device call, from the repository root (where `make test` runs the suite, so the recipes' relative paths
# resolve): every GPU-marked test outside tests/test_triton_gpu.py, on the code with the compiled-decode fix
# (commit aa54e39), inputs from a fixed seed. Usage: bash benchmarks/results/gpu-tests-after-fix-2026-12-06/call.sh
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
export SLKERNELS_TEST_SEED=6120 PYTHONUNBUFFERED=1
timeout 400 python -m pytest -q -p no:cacheprovider -m gpu --ignore=tests/test_triton_gpu.py -rfE -v \
  --durations=10 tests > "$OUT/gpu-marked-others.log" 2>&1
echo "pytest rc $?"; grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/gpu-marked-others.log" | tail -30
