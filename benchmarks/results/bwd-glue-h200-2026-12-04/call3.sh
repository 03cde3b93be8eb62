# Call 3: the backward's per-row math in two launches (mix_bwd) and the key-block slices in one (block_ranges),
# against commit 830ba18's kernels (build/head/slkernels_head, carried) in one process: forward + backward,
# synchronised and queued (ab_step.py); the kernels of one released 16K step (profile_step.py); then the GPU tests
# of every gradient and the warp-specialised backward.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
D=benchmarks/results/bwd-glue-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call3.txt
for c in "released 16384 20 20" "balanced 16384 20 20" "released 32768 10 20" "released 65536 6 10" "released 262144 6 4"; do
  set -- $c
  timeout 120 python -u $D/ab_step.py $1 $2 slkernels_head $3 $4 2>&1 | grep -v Warn | tee -a $OUT/ab-step-call3.jsonl
done
timeout 60 python -u $D/profile_step.py released 16384 --json $OUT/profile-call3-released-16384.json 2>&1 | grep -v Warn \
  | head -30 | tee $OUT/profile-call3.log
timeout 280 python -u -m pytest -q tests/test_triton_gpu.py -k "gradients or warp_specialised_backward" 2>&1 \
  | tail -6 | tee $OUT/gpu-tests-call3.log
