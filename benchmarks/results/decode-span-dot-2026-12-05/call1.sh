#!/bin/bash
# One device call: the decode step as committed (decode.SPAN_DOT False: a span's chunks on the CUDA cores) against
# its chunks on the tensor cores where the window's chunks are grouped by KV head (None), everywhere (True), everywhere
# with the window grouped everywhere too (the tiles' registers are paid either way), and with SPAN_FILL 7 beside
# None; 16 steps over 16 caches in one graph, 16K-1M, released and balanced, dense SDPA beside them. Then the decode GPU tests (SPAN_DOT forced each way in one of them). If a variant is adopted, the
# generation tests of tests/test_surgery_attention.py (-m gpu) run with it in the next call.
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
(cd /tmp && timeout 330 python "$OLDPWD/benchmarks/compare_passes.py" --decode --set "SPAN_DOT=None" \
  --set "SPAN_DOT=True" --set "SPAN_DOT=True; WINDOW_GROUPS=True" --set "SPAN_DOT=None; SPAN_FILL=7" --layers 16 \
  16384 32768 65536 262144 1048576) 2>&1 \
  | grep -v Warn > "$OUT/compare.log"; echo "compare rc ${PIPESTATUS[0]}"; grep -c '"ms"' "$OUT/compare.log"
timeout 230 python -m pytest -q -p no:cacheprovider -k decode tests/test_triton_gpu.py 2>&1 | tail -3 \
  | tee "$OUT/gpu-tests-decode.log"
