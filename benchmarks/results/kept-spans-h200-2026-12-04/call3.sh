# Call 3 (commit e8a3faa): every gradient test of both search keys (the backward from the kept span outputs), then the
# generation GPU tests of converted models (tests/test_surgery_attention.py).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
timeout 330 python -u -m pytest -q tests/test_triton_gpu.py -k "gradients" 2>&1 | tail -6 | tee $OUT/gpu-tests-call3.log
timeout 230 python -u -m pytest -q -m gpu tests/test_surgery_attention.py 2>&1 | tail -6 | tee $OUT/generation-call3.log
