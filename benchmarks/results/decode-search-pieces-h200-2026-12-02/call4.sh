# One device call (the tree as committed with SEARCH_SPLIT = (32, 32)): the step against 72fc727 (old-kernels/slk_old:
# `git archive 72fc727 kernels` unpacked there beforehand), then every GPU decode test.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
R=benchmarks/results/decode-search-pieces-h200-2026-12-02
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 200 python $OLDPWD/$R/pieces_compare.py) 2>&1 | grep -v Warn | tee $OUT/pieces-compare-call4.log
(cd tests && timeout 300 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode") 2>&1 | tail -30 | tee $OUT/gpu-tests-call4.log
