# Call 8: the forward without gradients with the output in the query's layout (torch.empty_like(q)): the GPU test
# of a model's [B, L, H, D] query at 64K in four chunks, and the 256K chunk test of the anchor key.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call8.txt
timeout 150 python -u -m pytest -q tests/test_triton_gpu.py -k "inference_in_chunks_writes or (inference_in_chunks_of_rows and anchor)" \
  2>&1 | grep -E "^E |passed|failed|Error" | tee $OUT/gpu-tests-call8.log
