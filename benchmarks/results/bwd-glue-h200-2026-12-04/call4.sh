# Call 4 (commit e3b6ce2): `slconvert bench` of the forward and forward+backward at 16K-256K, both settings, dense
# SDPA in the same process (the README table's rows); then the span-mean gradient tests call 3 did not reach.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call4.txt
(cd /tmp && timeout 300 python -m slconvert.cli bench --pass forward --pass forward_backward --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -24 | sed 's/.*\r//' > $OUT/bench-call4.log; tail -22 $OUT/bench-call4.log
timeout 200 python -u -m pytest -q tests/test_triton_gpu.py -k "span_mean_gradients and not (small-1000-heads0-64) and not (small-1000-heads0-128)" 2>&1 \
  | tail -4 | tee $OUT/gpu-tests-call4.log
