#!/bin/bash
# Second device call, with SPAN_DOT on by default (a span's chunks on the tensor cores, the window grouped wherever
# they are): `slconvert bench --pass decode` (16 steps over 16 caches in one graph, the README's protocol), then the
# decode GPU tests with the new defaults.
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
(cd /tmp && timeout 130 python -m slconvert.cli bench --pass decode --out "$OUT/bench") 2>&1 | grep -v Warn \
  | sed 's/.*\r//' > "$OUT/bench.log"; tail -12 "$OUT/bench.log"
timeout 140 python -m pytest -q -p no:cacheprovider -k decode tests/test_triton_gpu.py 2>&1 | tail -3 \
  | tee "$OUT/gpu-tests-decode.log"
