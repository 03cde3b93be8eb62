#!/usr/bin/env bash
# Converted layers keeping the span-mean key's running sums between calls (`slconvert.attention.KEEP_STATE`): the
# GPU tests of the kept sums (kernels at the attention shape; a converted model generating on a static cache,
# compiled), then the compiled decode of the Nemotron-3-Nano shape (64 experts, released setting, span_mean) at 1M,
# as `../model-bench-compiled-decode-search-keys-2026-12-06/` measured it without kept sums.
# Run from the repository root on a CUDA machine with fla-core:
#   bash benchmarks/results/model-bench-kept-sums-2026-12-06/call.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1
start=$SECONDS
(cd tests && timeout -k 5 ${TEST_LIMIT:-200} python3 -m pytest -q -p no:cacheprovider --rootdir "$ROOT/tests" -c /dev/null \
    test_triton_gpu.py test_surgery_attention.py -k "kept_sums or through_a_state or static_cache" 2>&1 \
    | tail -30 > "$OUT/gpu_tests.log"; tail -4 "$OUT/gpu_tests.log")
echo "tests: $((SECONDS - start)) s"
LIMIT=${LIMIT:-330} bash benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/call.sh "$OUT" span_mean 1M
