#!/bin/bash
# The decode step in a graph as the bench timed it before (the public call making its own positions each step), as a
# converted layer calls it (one positions tensor shared by the steps, check_values=False: the bench now) and as the
# backend's call (compare_passes.py's), in one process (ab_positions.py); then `slconvert bench --pass decode`.
source scripts/checkout_on_path.sh && importable_here "$PWD"
D=benchmarks/results/decode-bench-positions-2026-12-06
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
timeout 80 python -u "$D/ab_positions.py" 16384 32768 65536 2>&1 | grep -v Warn > "$OUT/ab.jsonl"
echo "ab rc ${PIPESTATUS[0]} lines $(wc -l < "$OUT/ab.jsonl")"
(cd /tmp && timeout 120 python -m slconvert.cli bench --pass decode --out "$OUT/bench") 2>&1 | grep -v Warn \
  | sed 's/.*\r//' > "$OUT/bench.log"; tail -17 "$OUT/bench.log"
