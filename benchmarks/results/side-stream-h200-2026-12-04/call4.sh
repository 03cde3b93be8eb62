# Call 4: the backward kernels whose query addressing moved into `common.entry_rows`' offsets (the `tl` entry and
# dk/dv kernels): the gradient tests of both search keys and the warp-specialised backward tests; forward +
# backward against commit 0590f30's kernels in one process (ab_step.py of bwd-glue-h200-2026-12-04).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
A=benchmarks/results/bwd-glue-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call4.txt
timeout 330 python -u -m pytest -q tests/test_triton_gpu.py -k "gradients or warp_specialised_backward" 2>&1 | tail -4 \
  | tee $OUT/gpu-tests-call4.log
for c in "released 262144 5 3" "released 16384 20 20"; do
  set -- $c
  timeout 90 python -u $A/ab_step.py $1 $2 slkernels_head $3 $4 2>&1 | grep -v Warn | tee -a $OUT/ab-step-call4.jsonl
done
