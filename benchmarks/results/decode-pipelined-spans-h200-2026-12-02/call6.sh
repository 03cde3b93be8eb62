# One device call, the tree as committed (DECODE_TILE = (256, 16, 1, 2), WINDOW_TILE = (128, 16, 2)): the decode GPU
# tests, then SPAN_FILL 8 and 7 against 10 at 16K-64K.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call6.txt
(cd tests && timeout 140 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call6.log
(cd /tmp && timeout 75 python $OLDPWD/benchmarks/compare_passes.py --decode --set "SPAN_FILL=8" --set "SPAN_FILL=7" \
  --layers 16 16384 32768 65536) 2>&1 | grep -v Warn > $OUT/compare-call6.log; grep -c ms $OUT/compare-call6.log
