# One device call: the decode step with the window's chunks scored per KV head on the tensor cores (this tree) against
# 83d4c17 (old-kernels/slk_old: `git archive 83d4c17 kernels` unpacked there beforehand), with sweeps of the new
# settings, then the GPU decode tests.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 300 python $OLDPWD/benchmarks/compare_passes.py --decode \
  --packages slkernels,slk_old --set "WINDOW_LAUNCH=4" --set "WINDOW_TILE=(64, 16, 1)" --set "WINDOW_TILE=(256, 16, 1)" \
  --set "DECODE_TILE=(64, 16, 1, 3)" --set "CHUNK_ORDER=1" 16384 65536 262144 1048576) 2>&1 | grep -v Warn | tee $OUT/compare-call1.log
(cd tests && timeout 250 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode") 2>&1 | tail -30 | tee $OUT/gpu-tests-call1.log
