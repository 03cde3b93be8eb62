# One device call: the window branch against 72fc727 (old-kernels/slk_old: `git archive 72fc727 kernels` unpacked
# there beforehand), then the GPU decode tests.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
R=benchmarks/results/decode-search-pieces-h200-2026-12-02
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 300 python $OLDPWD/$R/branch_compare.py) 2>&1 | grep -v Warn | tee $OUT/branch-compare-call3.log
(cd tests && timeout 240 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "eager_decode_replayed or decode_cuda_graph or public_decode or test_decode or programmatic") 2>&1 | tail -25 | tee $OUT/gpu-tests-call3.log
