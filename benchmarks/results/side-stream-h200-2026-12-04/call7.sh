# Call 7: the six fused-span-dq tests in call 4's order in one process, three times (the first on a fresh machine).
source scripts/checkout_on_path.sh && importable_here $PWD; for i in 1 2 3; do timeout 80 python -u -m pytest -q tests/test_triton_gpu.py -k "warp_specialised_backward and fused_span_dq" 2>&1 | grep -E "^E |passed|failed" | head -8; done 2>&1 | tee $OUT/rerun-call7.log
