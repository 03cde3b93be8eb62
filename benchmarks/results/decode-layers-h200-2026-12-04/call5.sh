# Call 5: the GPU tests of tests/test_triton_gpu.py that calls 3-4 left out, on commit 139fd37 (the span lists
# finished in one launch): fp16 gradients of both keys, the forward grids at short lengths, the span-mean sums at 1M.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
(cd tests && timeout 420 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf -k "(gradients and float16) or forward_grid or sums_at_a_million" test_triton_gpu.py) > $OUT/gpu-tests-call5.log 2>&1; tail -6 $OUT/gpu-tests-call5.log
