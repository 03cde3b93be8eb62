# Call 1: the warp-specialised dk/dv kernel (attend_bwd_ws) checked against the tl kernel on small and odd lengths,
# its GPU test, then both kernels timed per pass (released 64K / 256K, balanced 256K) under three ring depths, and
# the whole backward and forward + backward at released 256K with and without it.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
B=$PWD/benchmarks
(cd /tmp && timeout 150 python $B/ws_dkdv.py --check released:4096 balanced:8191 released:20000 \
  --json $OUT/check-call1.json) 2>&1 | grep -v Warn | tail -12 | tee $OUT/check-call1.log
grep -q WRONG $OUT/check-call1.log && exit 1
grep -q EXACT $OUT/check-call1.log || exit 1
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "warp_specialised_key_pass" test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-call1.log
(cd /tmp && timeout 240 python $B/ws_dkdv.py released:262144 released:65536 balanced:262144 \
  --tiles 64,64,3,232,40 64,64,2,232,40 64,64,4,232,40 --json $OUT/time-call1.json) 2>&1 | grep -v Warn \
  | tee $OUT/time-call1.log | tail -40
(cd /tmp && timeout 150 python $B/ws_dkdv.py released:262144 --backward --json $OUT/backward-call1.json) 2>&1 \
  | grep -v Warn | tee $OUT/backward-call1.log | tail -14
