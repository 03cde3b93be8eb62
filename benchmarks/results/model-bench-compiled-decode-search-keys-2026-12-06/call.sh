#!/usr/bin/env bash
# Compiled decode (torch.compile with CUDA graphs on a static cache) of a Nemotron-3-Nano-shaped model (64 routed
# experts: an H100's memory) converted with the released setting and one search key, at 32K and 1M of context; no
# dense baseline (the question is what the span-mean key's per-step rebuild of the cache's running sums costs).
# One key per call, span_mean first, on one machine. Run from the repository root on a CUDA machine with fla-core:
#   bash benchmarks/results/model-bench-compiled-decode-search-keys-2026-12-06/call.sh OUT_DIR KEY [LENGTHS]
# (LENGTHS default 32K,1M; the anchor call ran 1M alone to fit what was left of the device time.)
set -uo pipefail
OUT=${1:?OUT_DIR}
KEY=${2:?anchor or span_mean}
LENGTHS=${3:-32K,1M}
mkdir -p "$OUT"
source scripts/checkout_on_path.sh && importable_here "$PWD"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, fla; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__, '| fla-core', fla.__version__)"
  git rev-parse HEAD 2>/dev/null; } | tee "$OUT/env-$KEY.txt"
start=$SECONDS
timeout -k 10 ${LIMIT:-570} python3 scripts/build_nano_shape.py --bench "$OUT/$KEY" --experts 64 --lengths "$LENGTHS" --chunk 32K \
    --decode-tokens 16 --compile --no-dense --search-key "$KEY" 2>&1 | grep -v "chunks\]" > "$OUT/$KEY.log"
echo "$KEY: rc ${PIPESTATUS[0]} in $((SECONDS - start)) s" | tee -a "$OUT/env-$KEY.txt"
tail -12 "$OUT/$KEY.log"
