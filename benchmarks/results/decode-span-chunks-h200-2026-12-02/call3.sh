# One device call (the session's third): the tree with GATES_BEFORE_WAIT = True as changed after call 2 (a window's
# program lets the combine start at its start, a span's once it has waited for the search) against False, decode at
# 16K-1M (16 steps per graph, 16 layers); then the decode GPU tests and the GPU tests of generation through converted
# models on the tree.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode --set "GATES_BEFORE_WAIT=False" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call3.log; grep -c ms $OUT/compare-call3.log
(cd tests && timeout 150 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call3.log
timeout 200 python -m pytest -q -p no:cacheprovider -m gpu tests/test_surgery_attention.py 2>&1 | tail -3 | tee $OUT/gpu-tests-generation-call3.log
