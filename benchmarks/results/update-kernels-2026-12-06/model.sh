#!/usr/bin/env bash
# Compiled decode of the Nemotron-3-Nano-shaped model (64 routed experts, released setting) at 1M of context with the
# anchor key, then with the span-mean key, in one call on one machine, so that their ratio comes from one run
# (`../model-bench-compiled-decode-search-keys-2026-12-06/call.sh` for each). Run from the repository root:
#   bash benchmarks/results/update-kernels-2026-12-06/model.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
for key in anchor span_mean; do
    LIMIT=${LIMIT:-280} bash benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/call.sh "$OUT" "$key" 1M
done
