# Call 7 (commit 334377d): the two gradient tests call 6 did not reach before its limit.
source scripts/checkout_on_path.sh && importable_here $PWD && timeout 200 python -u -m pytest -q tests/test_triton_gpu.py -k "span_mean_gradients and balanced-4096-heads2-128" 2>&1 | tail -3 | tee $OUT/gpu-tests-call7.log
