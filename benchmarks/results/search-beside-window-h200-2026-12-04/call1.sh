# Call 1: inference in chunks with chunk i + 1's route (search + span lists) started on a side stream once chunk i's
# span pass is queued, so the search runs beside chunk i's window pass; against the chunks one after another and the
# one pass, in one process (../side-stream-h200-2026-12-04/ab_infer.py), with kernel profiles at 256K; then the GPU
# tests of inference in chunks.
source scripts/checkout_on_path.sh && importable_here $PWD
A=benchmarks/results/side-stream-h200-2026-12-04/ab_infer.py
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call1.txt
for c in "released 262144 9 --profile" "released 131072 9" "released 65536 9" "balanced 262144 9 --profile"; do
  timeout 150 python -u $A $c 2>&1 | grep -v -i warn | tee -a $OUT/ab-call1.jsonl
done
timeout 200 python -u -m pytest -q tests/test_triton_gpu.py -k "inference_in_chunks" 2>&1 | grep -E "^E |passed|failed|Error" \
  | tee $OUT/gpu-tests-call1.log
