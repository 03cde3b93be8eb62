# Call 1: the warp-specialised span dq (attend_ws, MODE_DQ_SPAN) checked against the tl entry kernel on small and odd
# lengths, timed with the whole backward at released 256K, timed at released 64K / 16K and balanced 256K, then the GPU
# tests of the backward with it (bf16).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
B=$PWD/benchmarks
(cd /tmp && timeout 70 python $B/ws_span_dq.py --check released:4096 balanced:8191 released:20000 \
  --json $OUT/check-call1.json) 2>&1 | grep -v Warn | tail -8 | tee $OUT/check-call1.log
grep -q WRONG $OUT/check-call1.log && exit 1
grep -q EXACT $OUT/check-call1.log || exit 1
(cd /tmp && timeout 90 python $B/ws_span_dq.py released:262144 --backward --json $OUT/backward-call1.json) 2>&1 \
  | grep -v Warn | tee $OUT/backward-call1.log | grep "ms$"
(cd /tmp && timeout 80 python $B/ws_span_dq.py released:65536 balanced:262144 released:16384 \
  --json $OUT/time-call1.json) 2>&1 | grep -v Warn | tee $OUT/time-call1.log | grep "ms$\|WRONG"
(cd tests && timeout 80 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "warp_specialised_backward and span_dq and dtype0" test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-call1.log
