# One device call: the decode rules as committed (the window's chunks by KV head below GROUPS_BELOW_PER_SM span
# programs per SM, by query row above; SPAN_FILL = 8) against 83d4c17 (old-kernels/slk_old) and against each rule
# forced, at 16K-1M; then every GPU decode test.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 330 python $OLDPWD/benchmarks/compare_passes.py --decode \
  --packages slkernels,slk_old --set "WINDOW_GROUPS=True" --set "WINDOW_GROUPS=False" --set "SPAN_FILL=None" \
  16384 32768 65536 131072 262144 524288 1048576) 2>&1 | grep -v Warn | tee $OUT/compare-call3.log
(cd tests && timeout 200 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode") 2>&1 | tail -30 | tee $OUT/gpu-tests-call3.log
