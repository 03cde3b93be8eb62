# One device call, the cover kernel taking each tile row's anchor without a reshape: the per-head check of call 3,
# the decode GPU tests, and the step (16 per graph) at 16K-128K with the default rule and with the cover off.
source scripts/checkout_on_path.sh && importable_here $PWD
R=$PWD/benchmarks/results/decode-union-h200-2026-12-02
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
(cd /tmp && timeout 90 python $R/debug_cover.py) 2>&1 | grep -v Warn > $OUT/debug-call4.log; grep -c '"cover"' $OUT/debug-call4.log; grep '"label": "cover"' $OUT/debug-call4.log | cut -c1-160
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -14 | tee $OUT/gpu-tests-decode-call4.log
(cd /tmp && timeout 100 python $OLDPWD/benchmarks/compare_passes.py --decode --set "DECODE_COVER=False" --set "DECODE_COVER=True" \
  --layers 16 16384 32768 65536 131072) 2>&1 | grep -v Warn > $OUT/compare-cover-call4.log; grep -c ms $OUT/compare-cover-call4.log
