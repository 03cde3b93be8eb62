# Call 5: the second half of the GPU tests (pytest --shard 2/2) on the final code, whose inputs now come from the
# run's seed (SLKERNELS_TEST_SEED, printed by pytest), to the call's time limit.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call5.txt
timeout 560 python -u -m pytest tests/test_triton_gpu.py --shard 2/2 -p no:cacheprovider -rf 2>&1 \
  | grep -E "^E |passed|failed|FAILED|Error|SLKERNELS_TEST_SEED|%\]" | tee $OUT/gpu-tests-call5.log
