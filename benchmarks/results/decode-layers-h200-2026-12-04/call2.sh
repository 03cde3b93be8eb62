# Call 2: where the released 16K forward's host time goes (cProfile over 20 calls, each Triton launch timed).
source scripts/checkout_on_path.sh && importable_here $PWD; D=benchmarks/results/decode-layers-h200-2026-12-04
timeout 200 python $D/forward_host_profile.py 16384 > $OUT/forward-host-profile-call2.log 2>&1
