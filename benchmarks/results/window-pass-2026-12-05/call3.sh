# Call 3: the GPU tests that run the window pass with the new mix (forward grids, long sampled rows, inference in
# chunks, chunked prefill, bf16 gradients), on this tree.
patch -p1 -s < benchmarks/results/window-pass-2026-12-05/window-epilogue.patch || exit 1  # the change, as the tree had it
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
timeout 520 python -u -m pytest -q -rf -p no:cacheprovider tests/test_triton_gpu.py \
  -k "forward_grid or long_sampled or inference_in_chunks or chunked_prefill or (test_gradients and bfloat16)" 2>&1 \
  | grep -v Warn | tail -8 | tee $OUT/gpu-tests-call3.log
