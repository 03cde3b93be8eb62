#!/usr/bin/env bash
# The kept span-mean sums' update with its small torch operations moved into two kernels (the tiles' offsets and the
# centre; the choice of centre and scale and the first block to write): the update A/B against the one before it at
# 16K-1M (`update_ab.py`), the selection against float64 (`../kept-sums-shipped-2026-12-06/selection_ties.py`), the
# span-mean GPU tests, then `slconvert bench --pass decode` with the span-mean key.
# Run from the repository root on a CUDA machine, after making the module before the change (not kept in git;
# delete it after the run):
#   git show 670a0e0:kernels/triton_ops/prefix.py > benchmarks/results/update-kernels-2026-12-06/prefix_before.py
#   bash benchmarks/results/update-kernels-2026-12-06/call.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
HERE=benchmarks/results/update-kernels-2026-12-06
cp "$HERE/prefix_before.py" kernels/triton_ops/_prefix_before.py
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"; } | tee "$OUT/env.txt"
(cd /tmp && timeout -k 5 90 python3 "$ROOT/$HERE/update_ab.py" "$OUT/update_ab.json" 2>&1 | tail -6 | tee "$OUT/update_ab.log")
(cd /tmp && timeout -k 5 60 python3 "$ROOT/benchmarks/results/kept-sums-shipped-2026-12-06/selection_ties.py" \
    "$OUT/ties.json" 2>&1 | tail -20 > "$OUT/ties.log"; grep -c " 0 of " "$OUT/ties.log")
start=$SECONDS
(cd tests && timeout -k 5 ${TEST_LIMIT:-300} python3 -m pytest -q -p no:cacheprovider -n 4 --rootdir "$ROOT/tests" \
    -c /dev/null -rf --tb=short test_triton_gpu.py test_surgery_attention.py -k "span_mean" > "$OUT/gpu_tests.log" 2>&1)
grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | tail -30
echo "tests: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
start=$SECONDS
(cd /tmp && timeout -k 5 ${BENCH_LIMIT:-150} python3 -c "from slconvert.cli import main; main()" bench --pass decode \
    --setting released --search-key span_mean --lengths ${LENGTHS:-16K,32K,64K,256K} --out "$OUT/bench" 2>&1 \
    | tail -6 | tee "$OUT/bench.log")
echo "bench: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
rm -f kernels/triton_ops/_prefix_before.py
