# Call 1: inference in chunks with each chunk's route (search + span lists) on a side stream, against the chunks
# one after another and the one pass, in one process (ab_infer.py), with a kernel profile at 256K released; then
# the GPU tests of inference in chunks at 256K (both search keys, peak memory within 1.5x dense SDPA's).
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/side-stream-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call1.txt
for c in "released 262144 7 --profile" "released 131072 7" "released 65536 9" "balanced 262144 7"; do
  timeout 150 python -u $D/ab_infer.py $c 2>&1 | grep -v Warn | tee -a $OUT/ab-call1.jsonl
done
timeout 200 python -u -m pytest -q tests/test_triton_gpu.py -k "inference_in_chunks" 2>&1 | tail -5 \
  | tee $OUT/gpu-tests-call1.log
