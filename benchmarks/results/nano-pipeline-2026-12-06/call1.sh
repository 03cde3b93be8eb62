#!/usr/bin/env bash
# `make pipeline`'s stages (inspect, convert, curriculum, evaluate, summary; no warm-up, the pipeline's default) on
# a Nemotron-3-Nano-shaped random checkpoint with 16 routed experts, on one GPU, with the Makefile's conversion
# settings (released shape, span-mean search key) and the README's `gradient_checkpointing=true`: four `mixers`
# steps of one 32K sequence. What it measures: each stage's wall time, the curriculum's tokens/s and peak GPU
# memory. Run from the repository root on a CUDA machine with fla-core (the wheels in .whl/):
#   bash benchmarks/results/nano-pipeline-2026-12-06/call1.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
WORK=/tmp/nano-pipeline
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, fla; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__, '| fla-core', fla.__version__)"; } \
  | tee "$OUT/env.txt"
EXPERTS=16 SEQ_LEN=32768 STEPS=4 STAGE_TIMEOUT=420 STAGES="inspect convert curriculum evaluate summary" \
  TRAIN_EXTRA="gradient_checkpointing=true" bash scripts/pipeline_gpu_check.sh "$WORK" 2>&1 | tee "$OUT/check.log"
rc=${PIPESTATUS[0]}
cp "$WORK/progress.txt" "$WORK/stages.txt" "$OUT/" 2>/dev/null
cp "$WORK/run/curriculum/metrics.jsonl" "$OUT/curriculum-metrics.jsonl" 2>/dev/null
cp "$WORK/run/summary.json" "$OUT/" 2>/dev/null
tail -40 "$WORK/evaluate.log" > "$OUT/evaluate-tail.log" 2>/dev/null
tail -40 "$WORK/curriculum.log" > "$OUT/curriculum-tail.log" 2>/dev/null
echo "rc $rc"
