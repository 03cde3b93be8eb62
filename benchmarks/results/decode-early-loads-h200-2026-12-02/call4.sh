# One device call, the committed tree (6a1a9ff) with decode.SPAN_FILL = 10: SPAN_FILL swept at 16K-256K (16 steps per
# graph), the decode GPU tests with 10, among them the
# second to last test of `--shard 2/2`, then its last: call 3's time limit left these two unrun.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
(cd /tmp && timeout 170 python $OLDPWD/benchmarks/compare_passes.py --decode --set "SPAN_FILL=8" --set "SPAN_FILL=9" \
  --set "SPAN_FILL=11" --set "SPAN_FILL=12" --layers 16 16384 32768 65536 131072 262144) 2>&1 | grep -v Warn > $OUT/compare-call4.log; grep -c ms $OUT/compare-call4.log
(cd tests && timeout 220 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call4.log
(cd tests && timeout 100 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  "test_triton_gpu.py::test_span_mean_sums_at_a_million_tokens") 2>&1 | tail -3 | tee $OUT/gpu-tests-rest-call4.log
