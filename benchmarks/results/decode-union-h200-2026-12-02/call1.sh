# One device call, tree f0f95c1: the two dependent-load cuts of 75ac009 (search pieces test each offset against t; the
# combine merges a range in one round) against the tree before them (136853b, as package slk_old), 16 decode steps
# per graph at 16K-1M; then the first half of tests/test_triton_gpu.py.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 150 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_old --layers 16 \
  16384 32768 65536 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-cuts-call1.log; grep -c ms $OUT/compare-cuts-call1.log
(cd tests && timeout 380 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null --shard 1/2 test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-shard1-call1.log
