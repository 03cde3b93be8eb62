# Call 2: where a synchronised 256K forward's time goes beyond its kernels (host_gap.py, both settings); then the
# warp-specialised backward's fp16 cases under five seeds of the GPU tests' inputs (SLKERNELS_TEST_SEED), the case
# that failed once in ../side-stream-h200-2026-12-04/call4 among them.
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/search-beside-window-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call2.txt
for c in "released 262144 15" "balanced 262144 15" "released 16384 30"; do
  timeout 120 python -u $D/host_gap.py $c 2>&1 | grep -v -i warn | tee -a $OUT/host-gap-call2.jsonl
done
for s in 1 2 3 4 5; do
  SLKERNELS_TEST_SEED=$s timeout 100 python -u -m pytest -q tests/test_triton_gpu.py -k "warp_specialised_backward and dtype1" \
    2>&1 | grep -E "^E |passed|failed|Error|SLKERNELS_TEST_SEED" | tee -a $OUT/gpu-tests-call2.log
done
