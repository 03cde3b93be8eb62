# One device call (the session's second, after ../span-mean-search-order-h200-2026-12-02/call2.sh on the same
# machine): the tree with GATES_BEFORE_WAIT = True (the partial kernel lets the combine start once each program has
# waited for the search; the combine takes the gates before its wait) against False, decode at 16K-1M (16 steps per
# graph, 16 layers); then the decode GPU tests on the tree.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode --set "GATES_BEFORE_WAIT=False" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call2.log; grep -c ms $OUT/compare-call2.log
(cd tests && timeout 150 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call2.log
