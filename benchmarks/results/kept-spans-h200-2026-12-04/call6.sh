# Call 6 (commit of the warp-reduced range test): the warp-specialised backward tests and the gradient tests at head
# dim 128 (every one runs dk/dv on `attend_bwd_ws`), then `slconvert bench` of forward+backward (the README rows).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call6.txt
timeout 250 python -u -m pytest -q tests/test_triton_gpu.py -k "warp_specialised_backward or (gradients and 128)" 2>&1 \
  | tail -6 | tee $OUT/gpu-tests-call6.log
(cd /tmp && timeout 250 python -m slconvert.cli bench --pass forward_backward --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -14 | sed 's/.*\r//' > $OUT/bench-call6.log; tail -12 $OUT/bench-call6.log
