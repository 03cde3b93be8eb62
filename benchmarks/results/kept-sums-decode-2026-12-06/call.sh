#!/usr/bin/env bash
# The span-mean decode step with its running sums kept between calls (`slkernels.LayerState`): the GPU tests of the
# span-mean key (kernels; converted models generating on a static cache, compiled, with the kept sums), the kept
# sums' update at 1M keys under the profiler (`profile_update.py`), then `slconvert bench --pass decode` of the
# released setting with both search keys, 1M included.
# Run from the repository root on a CUDA machine:  bash benchmarks/results/kept-sums-decode-2026-12-06/call.sh OUT_DIR
# (`before/` holds the same call's output at commit 1412f9b, the first version of the kept sums.)
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
HERE=benchmarks/results/kept-sums-decode-2026-12-06
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
  git rev-parse HEAD 2>/dev/null; } | tee "$OUT/env.txt"
start=$SECONDS
(cd tests && timeout -k 5 ${TEST_LIMIT:-330} python3 -m pytest -q -p no:cacheprovider --rootdir "$ROOT/tests" -c /dev/null \
    test_triton_gpu.py test_surgery_attention.py -k "span_mean or static_cache" 2>&1 | tail -25 | tee "$OUT/gpu_tests.log")
echo "tests: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
(cd /tmp && python3 "$ROOT/$HERE/profile_update.py" 2>&1 | head -24 | tee "$OUT/profile.log")
start=$SECONDS
(cd /tmp && timeout -k 5 ${LIMIT:-200} python3 -c "from slconvert.cli import main; main()" bench --pass decode \
    --setting released --search-key anchor --search-key span_mean --lengths 16K,64K,256K --out "$OUT/bench" 2>&1 \
    | tail -18 | tee "$OUT/bench.log")
echo "bench: $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
