#!/bin/bash
# Device call with SPAN_DOT on by default: call2.sh (bench --pass decode, decode GPU tests), then the generation
# GPU tests through converted models (unbuffered, so an error's own line reaches the log).
bash benchmarks/results/decode-span-dot-2026-12-05/call2.sh
source scripts/checkout_on_path.sh && importable_here "$PWD"
timeout 200 python -u -m pytest -q -p no:cacheprovider -m gpu tests/test_surgery_attention.py 2>&1 | tail -15 \
  | tee "$OUT/gpu-tests-surgery.log"
