# Call 6: call 4's failing case alone, eight times.
source scripts/checkout_on_path.sh && importable_here $PWD; for i in 1 2 3 4 5 6 7 8; do timeout 60 python -u -m pytest -q tests/test_triton_gpu.py -k "warp_specialised_backward and fused_span_dq and released and dtype1" 2>&1 | grep -E "^E |passed|failed" | head -8; done 2>&1 | tee $OUT/rerun-call6.log
