# One device call: the tree with span-trim.patch applied (package slkernels) against commit d254ce3 (slk_old), decode
# at 16K-256K (16 steps per graph, 16 layers), then the decode GPU tests on the patched tree.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_old \
  --layers 16 16384 32768 65536 131072 262144) 2>&1 | grep -v Warn > $OUT/compare-call1.log; grep -c ms $OUT/compare-call1.log
(cd tests && timeout 220 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call1.log
