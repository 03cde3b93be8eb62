cd "$(dirname "$0")"
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
(cd tests && timeout 120 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode and not span_mean" 2>&1 | grep -E "PASS|FAIL|ERROR|passed|failed|Error" | tail -40) > $OUT/gpu-tests-16-1.log
tail -2 $OUT/gpu-tests-16-1.log
