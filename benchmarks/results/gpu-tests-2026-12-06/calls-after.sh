#!/bin/bash
# The device calls after call.sh's three parts, as run (one H100, warm), each from the repository root.
# 1. The GPU-marked tests of the other files:
source scripts/checkout_on_path.sh && importable_here "$PWD"; cd tests && SLKERNELS_TEST_SEED=6120 timeout 220 \
  python -m pytest -q -p no:cacheprovider -m gpu --ignore=test_triton_gpu.py -rfE 2>&1 | tail -15 \
  | tee "$OUT/gpu-marked-others.log"
# 2. The two failures again with their tracebacks (two-failures.log). Run from tests/, the training test could not find
#    recipes/long-context.yaml, a path the suite takes from the repository root (make test runs it there).
# 3. The compiled-decode test with kernels/inputs.py of today and of commit 9f6dc1d (`git show 9f6dc1d:kernels/inputs.py`
#    copied over it): ab-inputs-now.log, ab-inputs-9f6dc1d.log.
# 4. The same test with SLKERNELS_GRAPH_DECODE=0, then with slkernels.triton_ops.decode.SPAN_DOT = False:
#    no-graph-decode.log, no-span-dot.log.
