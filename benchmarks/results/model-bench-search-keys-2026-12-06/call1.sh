#!/usr/bin/env bash
# The whole-model benchmark of a Nemotron-3-Nano-shaped model (64 routed experts: an H100's memory) converted with
# the released setting, once with each search key, in one call on one GPU; no dense baseline (the question is
# what the span-mean key costs a converted model). Run from the repository root on a CUDA machine with fla-core:
#   bash benchmarks/results/model-bench-search-keys-2026-12-06/call1.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
source scripts/checkout_on_path.sh && importable_here "$PWD"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, fla; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__, '| fla-core', fla.__version__)"
  git rev-parse HEAD 2>/dev/null; } | tee "$OUT/env.txt"
for key in anchor span_mean; do
  start=$SECONDS
  python3 scripts/build_nano_shape.py --bench "$OUT/$key" --experts 64 --lengths 32K,128K,1M --chunk 32K \
      --decode-tokens 4 --no-compile --no-dense --search-key "$key" 2>&1 \
    | grep -v "chunks\]" > "$OUT/$key.log"
  echo "$key: rc ${PIPESTATUS[0]} in $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
  tail -8 "$OUT/$key.log"
done
