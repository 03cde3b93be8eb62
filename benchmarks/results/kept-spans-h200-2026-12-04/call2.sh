# Call 2 (commit e8a3faa): the warp-specialised backward tests (dk/dv, the span dq from the kept span outputs, the
# fused span dq; bf16 and fp16), then `slconvert bench` of the forward and forward+backward at 16K-256K, both settings,
# dense SDPA in the same process (the README table's rows).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call2.txt
timeout 230 python -u -m pytest -q tests/test_triton_gpu.py -k "warp_specialised_backward" 2>&1 | tail -6 \
  | tee $OUT/gpu-tests-call2.log
(cd /tmp && timeout 320 python -m slconvert.cli bench --pass forward --pass forward_backward --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -24 | sed 's/.*\r//' > $OUT/bench-call2.log; tail -22 $OUT/bench-call2.log
