# Call 1: the window's dq pass (MODE_DQ over the window list, finishing dq) on the warp-specialised structure of
# attend_ws (one accumulator), checked against the `tl` entry kernel on small and odd lengths, timed under three ring
# depths with the whole backward at released 256K, timed at released 64K / 16K and balanced 256K; the span dq's ring
# depth (2, 4 against 3) at released 256K; then the GPU tests of the backward with the window dq on it.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
B=$PWD/benchmarks
(cd /tmp && timeout 70 python $B/ws_span_dq.py --window --check released:4096 balanced:8191 released:20000 \
  --json $OUT/check-call1.json) 2>&1 | grep -v Warn | tail -8 | tee $OUT/check-call1.log
grep -q WRONG $OUT/check-call1.log && exit 1
grep -q EXACT $OUT/check-call1.log || exit 1
(cd /tmp && timeout 110 python $B/ws_span_dq.py --window released:262144 --backward \
  --tiles 64,64,3,240,0 64,64,4,240,0 64,64,2,240,0 --json $OUT/window-256k-call1.json) 2>&1 \
  | grep -v Warn | tee $OUT/window-256k-call1.log | grep "ms$\|WRONG"
(cd /tmp && timeout 80 python $B/ws_span_dq.py --window released:65536 balanced:262144 released:16384 \
  --json $OUT/window-call1.json) 2>&1 | grep -v Warn | tee $OUT/window-call1.log | grep "ms$\|WRONG"
(cd /tmp && timeout 80 python $B/ws_span_dq.py released:262144 --tiles 64,64,3,240,0 64,64,2,240,0 64,64,4,240,0 \
  --json $OUT/span-256k-call1.json) 2>&1 | grep -v Warn | tee $OUT/span-256k-call1.log | grep "ms$\|WRONG"
(cd tests && timeout 120 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "warp_specialised_backward and window_dq" test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-call1.log
