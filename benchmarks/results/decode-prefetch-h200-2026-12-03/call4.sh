# One device call: the second half of tests/test_triton_gpu.py (every kernel: forward, gradients, chunked prefill,
# decode, span-mean sums) on the tree as committed, LONG_SPAN_BLOCKS = (6, 40).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
(cd tests && timeout 560 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null --shard 2/2 test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-shard2-call4.log
