# One device call, the working tree with the spans' chunks by KV head (decode.DECODE_COVER): the step (16 per graph)
# at 16K-128K with the rule's choice, each way forced, and three tilings of the KV head's chunks; then the GPU tests
# that force each way.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && timeout 240 python $OLDPWD/benchmarks/compare_passes.py --decode --set "DECODE_COVER=False" \
  --set "DECODE_COVER=True" --set "DECODE_COVER=True; COVER_TILE=(4, 16, 4, 3)" \
  --set "DECODE_COVER=True; COVER_TILE=(8, 16, 2, 3)" --set "DECODE_COVER=True; COVER_TILE=(2, 32, 4, 3)" \
  --layers 16 16384 32768 65536 131072) 2>&1 | grep -v Warn > $OUT/compare-call2.log; grep -c ms $OUT/compare-call2.log
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k "span_chunks_each_way" test_triton_gpu.py) 2>&1 | tail -8 | tee $OUT/gpu-tests-cover-call2.log
