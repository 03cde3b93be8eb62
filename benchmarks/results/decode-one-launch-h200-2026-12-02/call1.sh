# One device call: the one-launch step against 72fc727's three launches (old-kernels/slk_old: `git archive 72fc727
# kernels` unpacked there beforehand), then the GPU decode tests.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
R=benchmarks/results/decode-one-launch-h200-2026-12-02
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 330 python $OLDPWD/$R/step_compare.py) 2>&1 | grep -v Warn | tee $OUT/step-compare.log
(cd tests && timeout 200 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode" -x) 2>&1 | tail -30 | tee $OUT/gpu-tests.log
