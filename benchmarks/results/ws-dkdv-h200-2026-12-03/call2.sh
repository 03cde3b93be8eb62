# Call 2, on the code as committed (WS_KEY_PASS on, WS_DKDV_TILES (64, 64, 3, 232, 40)): the GPU tests whose
# gradients now run dk/dv on the warp-specialised kernel (head dim 128, 16-bit), both dk/dv passes against the `tl`
# kernel's at 16K and 32K (the shortest lengths of the bench), then the whole `slconvert bench`
# (both settings, forward, forward+backward and decode at 16K-256K, the 1M-token chunked prefill and decode).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd tests && timeout 150 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "(gradients and 128) or warp_specialised" test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-call2.log
B=$PWD/benchmarks
(cd /tmp && timeout 90 python $B/ws_dkdv.py released:16384 balanced:16384 released:32768 \
  --json $OUT/time-call2.json) 2>&1 | grep -v Warn | tee $OUT/time-call2.log | grep "ms$"
(cd /tmp && timeout 400 python -m slconvert.cli bench --out $OUT/bench) 2>&1 | grep -v Warn | tail -60 \
  > $OUT/bench-call2.log; tail -30 $OUT/bench-call2.log
