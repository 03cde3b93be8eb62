# Call 2 (the window pass last again, as committed): where the 16K forward's host time goes (host_stages.py),
# `slconvert bench --pass forward --lengths 16K`, and the GPU tests not yet run on the span lists finished in one
# launch (commit 139fd37's kernels): the gradients in fp16 and at head dims 64 and 256, the span-mean gradients in
# fp16 and at head dim 64, the last span-mean forward grid cases, the span-mean sums at 1M.
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/window-first-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
for n in 16384 32768; do timeout 60 python $D/host_stages.py $n | tee -a $OUT/host-stages-call2.jsonl; done
(cd /tmp && timeout 90 python -m slconvert.cli bench --pass forward --lengths 16K --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -6 | sed 's/.*\r//' > $OUT/bench-call2.log; tail -4 $OUT/bench-call2.log
(cd tests && timeout 420 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf \
  -k "(test_gradients and (dtype1 or 64 or 256)) or (span_mean_gradients and (dtype1 or 64)) or (span_mean_forward_grid and 256 and dtype1) or sums_at_a_million" \
  test_triton_gpu.py) > $OUT/gpu-tests-call2.log 2>&1; tail -8 $OUT/gpu-tests-call2.log
