#!/usr/bin/env bash
# The kept span-mean sums' update in four kernels (block totals, their compare with the kept ones, the bounds of both
# centres, the scan of the changed blocks) and torch's float64 scan of the block totals: Triton's 64-bit reductions
# against torch (`f64_reductions.py`), the span-mean GPU tests, the update's tilings at 1M (`totals_sweep.py`), the
# update under the profiler, then `slconvert bench --pass decode` of the released setting with both search keys.
# Run from the repository root on a CUDA machine:  bash benchmarks/results/kept-sums-update-2026-12-06/call.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
HERE=benchmarks/results/kept-sums-update-2026-12-06
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
  git rev-parse HEAD 2>/dev/null; } | tee "$OUT/env.txt"
(cd /tmp && timeout -k 5 60 python3 "$ROOT/$HERE/f64_reductions.py" "$OUT/f64_reductions.json" 2>&1 | tail -30 \
    | tee "$OUT/f64_reductions.log")
start=$SECONDS
if [ -z "${SKIP_TESTS:-}" ]; then
  (cd tests && timeout -k 5 ${TEST_LIMIT:-420} python3 -m pytest -q -p no:cacheprovider -n 6 --rootdir "$ROOT/tests" \
      -c /dev/null test_triton_gpu.py test_surgery_attention.py -k "span_mean" 2>&1 | tail -25 \
      | tee "$OUT/gpu_tests.log")
  echo "tests: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
fi
(cd /tmp && timeout -k 5 120 python3 "$ROOT/$HERE/totals_sweep.py" "$OUT/sweep.json" 2>&1 | tail -12 | tee "$OUT/sweep.log")
(cd /tmp && timeout -k 5 60 python3 "$ROOT/benchmarks/results/kept-sums-decode-2026-12-06/profile_update.py" 2>&1 \
    | head -24 | tee "$OUT/profile.log")
start=$SECONDS
(cd /tmp && timeout -k 5 ${LIMIT:-200} python3 -c "from slconvert.cli import main; main()" bench --pass decode \
    --setting released --search-key anchor --search-key span_mean --lengths 16K,64K,256K --out "$OUT/bench" 2>&1 \
    | tail -18 | tee "$OUT/bench.log")
echo "bench: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
