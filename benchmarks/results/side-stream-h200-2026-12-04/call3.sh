# Call 3: the chunks sized for what they now hold (k + 0.5 outputs a row: 10 chunks at 256K released instead of 13):
# the GPU tests of inference in chunks (memory within 1.5x dense) and the span-mean forward tests call 2 did not
# reach; the forward against commit 0590f30's kernels in one process (ab_forward.py); `slconvert bench --pass
# forward` at 16K-256K, both settings, dense SDPA in the same process (the README table's forward and memory rows).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
D=benchmarks/results/side-stream-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call3.txt
timeout 120 python -u -m pytest -q tests/test_triton_gpu.py -k "inference_in_chunks or span_mean_chunked_prefill or span_mean_forward_long" \
  2>&1 | tail -4 | tee $OUT/gpu-tests-call3.log
for c in "released 262144 slkernels_head 9 --profile" "balanced 262144 slkernels_head 9"; do
  timeout 100 python -u $D/ab_forward.py $c 2>&1 | grep -v Warn | tee -a $OUT/ab-call3.jsonl
done
(cd /tmp && timeout 240 python -m slconvert.cli bench --pass forward --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -24 | sed 's/.*\r//' > $OUT/bench-call3.log; tail -22 $OUT/bench-call3.log
