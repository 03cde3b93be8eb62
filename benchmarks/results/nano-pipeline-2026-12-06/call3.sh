#!/usr/bin/env bash
# Call 3, on the machine call 2 left warm (its /tmp/nano-pipeline: source, converted, venv wrappers, Triton's cache):
# the curriculum again (call 2's was stopped by its 420 s stage limit while writing the trained model, its first
# step having spent 313 s compiling fla's and slkernels' kernels), then evaluate and summary.
#   bash benchmarks/results/nano-pipeline-2026-12-06/call3.sh OUT_DIR
OUT=${1:?OUT_DIR}
source scripts/checkout_on_path.sh && importable_here "$PWD"
rm -rf /tmp/nano-pipeline/run/curriculum
mkdir -p "$OUT"
EXPERTS=16 SEQ_LEN=32768 STEPS=4 STAGE_TIMEOUT=380 STAGES="curriculum evaluate summary" \
  TRAIN_EXTRA="gradient_checkpointing=true" bash scripts/pipeline_gpu_check.sh /tmp/nano-pipeline 2>&1 \
  | tee "$OUT/check2.log" | tail -30
cp /tmp/nano-pipeline/progress.txt /tmp/nano-pipeline/stages.txt "$OUT/"
cp /tmp/nano-pipeline/run/curriculum/metrics.jsonl "$OUT/curriculum-metrics2.jsonl"
cp /tmp/nano-pipeline/run/summary.json "$OUT/"
tail -40 /tmp/nano-pipeline/evaluate.log > "$OUT/evaluate-tail.log"
