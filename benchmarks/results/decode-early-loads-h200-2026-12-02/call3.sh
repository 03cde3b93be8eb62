# One device call, the committed tree (6a1a9ff): the second half of tests/test_triton_gpu.py, then a sweep of the
# decode step's settings at 16K and 32K (16 steps per graph).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
(cd tests && timeout 420 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null --shard 2/2 test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-shard2-call3.log
(cd /tmp && timeout 140 python $OLDPWD/benchmarks/compare_passes.py --decode --set "SPAN_FILL=6" --set "SPAN_FILL=10" \
  --set "DECODE_TILE=(128, 32, 1, 3)" --set "DECODE_TILE=(128, 16, 1, 2)" --set "DECODE_SEARCH_TILE=(32, 1, 1)" \
  --set "DECODE_SEARCH_TILE=(32, 2, 1)" --set "SEARCH_SPLIT=(16, 64)" \
  --layers 16 16384 32768) 2>&1 | grep -v Warn > $OUT/compare-call3.log; grep -c ms $OUT/compare-call3.log
