#!/usr/bin/env bash
# The kept-sums update as it ships (32-column block totals): the span-mean GPU tests, then whether wider block-totals
# programs change the search's selection against float64 (`selection_ties.py`, three draws of each setting at 256K),
# then `slconvert bench --pass decode` of the released setting with both search keys.
# Run from the repository root on a CUDA machine:  bash benchmarks/results/kept-sums-shipped-2026-12-06/call.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
HERE=benchmarks/results/kept-sums-shipped-2026-12-06
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"; } | tee "$OUT/env.txt"
start=$SECONDS
(cd tests && timeout -k 5 ${TEST_LIMIT:-300} python3 -m pytest -q -p no:cacheprovider -n 8 --rootdir "$ROOT/tests" \
    -c /dev/null -rf --tb=short test_triton_gpu.py test_surgery_attention.py -k "span_mean" > "$OUT/gpu_tests.log" 2>&1)
grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | tail -30
echo "tests: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
start=$SECONDS
(cd /tmp && timeout -k 5 ${TIES_LIMIT:-150} python3 "$ROOT/$HERE/selection_ties.py" "$OUT/ties.json" 2>&1 | tail -20 \
    | tee "$OUT/ties.log")
echo "ties: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
start=$SECONDS
(cd /tmp && timeout -k 5 ${BENCH_LIMIT:-150} python3 -c "from slconvert.cli import main; main()" bench --pass decode \
    --setting released --search-key anchor --search-key span_mean --lengths 16K,64K,256K --out "$OUT/bench" 2>&1 \
    | tail -18 | tee "$OUT/bench.log")
echo "bench: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
