# Call 3, on commit 4589813: the second half of the GPU tests (`--shard 2/2` of tests/test_triton_gpu.py), then the
# three generation GPU tests of tests/test_surgery_attention.py.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
(cd tests && timeout 400 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf --shard 2/2 \
  test_triton_gpu.py) 2>&1 | grep -v Warn > $OUT/gpu-tests-shard2-call3.log; tail -12 $OUT/gpu-tests-shard2-call3.log
(cd tests && timeout 140 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf -m gpu \
  test_surgery_attention.py) 2>&1 | grep -v Warn > $OUT/gpu-tests-surgery-call3.log; tail -6 $OUT/gpu-tests-surgery-call3.log
