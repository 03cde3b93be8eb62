# One device call, the tree as committed (programmatic dependent launch on): every GPU decode test, the GPU tests of
# generation through converted models (dynamic and static caches, compiled, replayed), and the per-step comparison
# against 83d4c17 again (16 steps over 16 caches per graph).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call6.txt
(cd tests && timeout 150 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "decode") 2>&1 | tail -26 | tee $OUT/gpu-tests-call6.log
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null test_surgery_attention.py -k "generate or decode or cache or cuda") 2>&1 | tail -8 | tee -a $OUT/gpu-tests-call6.log
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 150 python $OLDPWD/benchmarks/compare_passes.py --decode \
  --packages slkernels,slk_old --layers 16 16384 65536 1048576) 2>&1 | grep -v Warn > $OUT/compare-layers-call6.log; tail -2 $OUT/compare-layers-call6.log
