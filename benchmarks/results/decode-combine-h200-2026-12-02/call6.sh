cd "$(dirname "$0")"
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 130 python benchmarks/results/decode-combine-h200-2026-12-02/combine_tiles.py 2>&1 | tee $OUT/combine-tiles.log
(cd tests && timeout 150 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode and not span_mean" 2>&1 | grep -E "PASS|FAIL|ERROR|passed|failed|Error" | tail -40) > $OUT/gpu-tests.log
grep -c PASSED $OUT/gpu-tests.log; grep -v PASSED $OUT/gpu-tests.log | tail -4
