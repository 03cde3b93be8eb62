# One device call: window chunks first, with and without programmatic dependent launch, against 8104ba6
# (old-kernels/slk_old: `git archive 8104ba6 kernels` unpacked there beforehand), then the GPU decode tests.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
R=benchmarks/results/decode-pdl-order-h200-2026-12-02
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 240 python $OLDPWD/$R/order_compare.py) 2>&1 | grep -v Warn | tee $OUT/order-compare.log
(cd tests && timeout 270 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode") 2>&1 | tail -30 | tee $OUT/gpu-tests.log
