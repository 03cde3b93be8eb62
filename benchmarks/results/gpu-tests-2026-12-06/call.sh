#!/bin/bash
# One device call: the K-th of 3 interleaved parts of the Triton GPU tests (tests/test_triton_gpu.py) on the code
# as committed, every test run (no -x), inputs from a fixed seed. Usage: bash call.sh K
K=$1
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/card.txt"
cat "$OUT/card.txt"
export SLKERNELS_TEST_SEED=6120 PYTHONUNBUFFERED=1
(cd tests && timeout 400 python -m pytest -q -p no:cacheprovider --rootdir . -c /dev/null -rfE --durations=5 \
  --shard "$K/3" test_triton_gpu.py 2>&1) > "$OUT/gpu-tests-$K-of-3.log"
echo "pytest rc $?"; tail -25 "$OUT/gpu-tests-$K-of-3.log"
