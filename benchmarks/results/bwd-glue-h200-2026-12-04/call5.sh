# Call 5 (commit 9078aa0): the forward GPU tests not yet run on the flat span-list sort (commit b4e9d9b): the forward
# grid at head dims 64 and 256, and the span-mean forward grid.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
timeout 360 python -u -m pytest -q -rf tests/test_triton_gpu.py -k "(forward_grid and not 128) or span_mean_forward_grid" 2>&1 \
  | tail -8 | tee $OUT/gpu-tests-call5.log
