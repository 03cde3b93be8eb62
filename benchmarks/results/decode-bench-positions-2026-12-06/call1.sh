#!/bin/bash
# One device call: call2.sh (the decode step in a graph as the bench timed it before, as a converted layer calls it
# and as the backend's call, in one process; then `slconvert bench --pass decode` with the new protocol), then the
# CUDA-graph GPU tests (a capture now reads the shared s0).
bash benchmarks/results/decode-bench-positions-2026-12-06/call2.sh
source scripts/checkout_on_path.sh && importable_here "$PWD"
timeout 110 python -m pytest -q -p no:cacheprovider -k "graph or replay or capture" tests/test_triton_gpu.py \
  2>&1 | tail -3 | tee "$OUT/gpu-tests.log"
