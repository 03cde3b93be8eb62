# Call 1: the span dq from the forward's kept span outputs (one accumulator) against the fused span dq, each on the
# warp-specialised and the `tl` kernel: gradients, backward times, peak memory (span_dq_ways.py); then forward +
# backward against commit 4cf718a's kernels (build/head/slkernels_head, carried) in one process (ab_step.py).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
D=benchmarks/results/kept-spans-h200-2026-12-04
A=benchmarks/results/bwd-glue-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call1.txt
timeout 300 python -u $D/span_dq_ways.py released:262144 released:65536 released:16384 balanced:262144 \
  --tiles 64,64,3,240,0 64,128,2,240,0 2>&1 | grep -v Warn | tee $OUT/ways-call1.log
for c in "released 262144 5 3" "released 65536 6 10" "released 16384 20 20"; do
  set -- $c
  timeout 100 python -u $A/ab_step.py $1 $2 slkernels_head $3 $4 2>&1 | grep -v Warn | tee -a $OUT/ab-step-call1.jsonl
done
