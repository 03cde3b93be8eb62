#!/bin/bash
# One device call: the decode step in a graph as the bench timed it before (the public call making its own position
# tensor each step) against the call a converted model's layer makes (one positions tensor shared by the steps,
# check_values=False; the bench now) and the backend's call (compare_passes.py's), then `slconvert bench --pass
# decode` with the new protocol, then the CUDA-graph GPU tests (a capture now reads the shared s0).
source scripts/checkout_on_path.sh && importable_here "$PWD"
D=benchmarks/results/decode-bench-positions-2026-12-06
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
timeout 90 python -u "$D/ab_positions.py" 16384 32768 65536 2>&1 | grep -v Warn > "$OUT/ab.jsonl"
echo "ab rc ${PIPESTATUS[0]} lines $(wc -l < "$OUT/ab.jsonl")"
(cd /tmp && timeout 130 python -m slconvert.cli bench --pass decode --out "$OUT/bench") 2>&1 | grep -v Warn \
  | sed 's/.*\r//' > "$OUT/bench.log"; tail -17 "$OUT/bench.log"
timeout 110 python -m pytest -q -p no:cacheprovider -k "graph or replay or capture" tests/test_triton_gpu.py \
  2>&1 | tail -3 | tee "$OUT/gpu-tests.log"
