# Call 6 (commit b4e9d9b's kernels, the span lists sorted as one flat list): the gradient tests call 3 left out
# (fp16 at head dims 64 / 128 / 256, bf16 at 64 / 256; the span mean in fp16 and at head dim 64).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call6.txt
(cd tests && timeout 400 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf \
  -k "(test_gradients and (dtype1 or 64 or 256)) or (span_mean_gradients and (dtype1 or 64))" \
  test_triton_gpu.py) > $OUT/gpu-tests-call6.log 2>&1; tail -6 $OUT/gpu-tests-call6.log
