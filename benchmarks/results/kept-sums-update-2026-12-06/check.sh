#!/usr/bin/env bash
# The last check of the kept-sums update, after the fix of the per-group first real key (kernels now read it by
# batch row): each stage of `key_prefix` against torch (`stages.py`, 64K and 1M), then the span-mean GPU tests.
# Run from the repository root on a CUDA machine:  bash benchmarks/results/kept-sums-update-2026-12-06/check.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
HERE=benchmarks/results/kept-sums-update-2026-12-06
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"; } | tee "$OUT/env.txt"
(cd /tmp && timeout -k 5 60 python3 "$ROOT/$HERE/stages.py" 2>&1 | tail -4 | tee "$OUT/stages.log")
start=$SECONDS
(cd tests && timeout -k 5 ${TEST_LIMIT:-280} python3 -m pytest -q -p no:cacheprovider -n 8 --rootdir "$ROOT/tests" \
    -c /dev/null test_triton_gpu.py test_surgery_attention.py -k "span_mean" 2>&1 | grep -v "Warning\|warn\|^  \|^$" \
    | tail -40 | tee "$OUT/gpu_tests.log")
echo "tests: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
