# Call 2 (the first of this folder; call 1 of the session is ../ws-window-dq-h200-2026-12-03/), on commit 4589813:
# the first half of the GPU tests (`--shard 1/2` of tests/test_triton_gpu.py), then the whole `slconvert bench`
# (both settings, forward, forward+backward and decode at 16K-256K, the 1M-token chunked prefill and decode) with the
# warp-specialised span dq in the backward.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd tests && timeout 380 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf --shard 1/2 \
  test_triton_gpu.py) 2>&1 | grep -v Warn | tail -8 | tee $OUT/gpu-tests-shard1-call2.log
(cd /tmp && timeout 190 python -m slconvert.cli bench --out $OUT/bench) 2>&1 | grep -v Warn | tail -60 \
  | sed 's/.*\r//' > $OUT/bench-call2.log; tail -30 $OUT/bench-call2.log
