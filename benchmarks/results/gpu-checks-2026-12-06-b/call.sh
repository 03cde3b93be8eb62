#!/usr/bin/env bash
# GPU tests added or not finished before: the kernels with the anchors' and the spans' powers apart (both search keys,
# output and four gradients against the reference), then every test of the fast Mamba-2 path (its fallback now
# really the PyTorch one), on one machine. Run from the repository root on a CUDA machine with fla-core:
#   bash benchmarks/results/gpu-checks-2026-12-06-b/call.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
ROOT=$PWD
source scripts/checkout_on_path.sh && importable_here "$ROOT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, fla; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__, '| fla-core', fla.__version__)"
  git rev-parse HEAD 2>/dev/null; } | tee "$OUT/env.txt"
run_tests() {  # NAME LIMIT pytest arguments...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    (cd tests && timeout -k 5 "$limit" python3 -m pytest -q -p no:cacheprovider -n 4 --rootdir "$ROOT/tests" \
        -c /dev/null -rfs --tb=short "$@" > "$OUT/$name.log" 2>&1)
    echo "$name: rc $? in $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
    grep -E "passed|failed|^FAILED|^SKIPPED|^E  " "$OUT/$name.log" | tail -25
}
# ONLY=models: the fast Mamba-2 path's whole-model tests alone (every tiny architecture on the hook, float32 and
# bfloat16, and that the models take the fast path), the ones a call of 400 s did not reach
if [[ ${ONLY:-} == models ]]; then
    run_tests fast_mamba_models "${MAMBA_LIMIT:-430}" test_fast_mamba_gpu.py -k "model"
    exit 0
fi
run_tests powers_apart "${POWERS_LIMIT:-150}" test_triton_gpu.py -k powers_apart
run_tests fast_mamba "${MAMBA_LIMIT:-400}" test_fast_mamba_gpu.py
