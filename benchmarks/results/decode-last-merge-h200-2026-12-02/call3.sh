# One device call, the tree of call 2 (programmatic dependent launch on everywhere, the combine kernel): every GPU test of
# tests/test_triton_gpu.py, then the decode step as a model's graph holds it (16 steps over 16 caches in one graph)
# at 16K-1M with and without programmatic dependent launch, and three tilings of the combine and the window at 16K-64K.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
(cd tests && timeout 420 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-call3.log
(cd /tmp && timeout 100 python $OLDPWD/benchmarks/compare_passes.py --decode --set "DECODE_PDL=False" --layers 16 \
  16384 32768 65536 131072 262144 524288 1048576) 2>&1 | grep -v Warn > $OUT/compare-layers-call3.log; grep -c ms $OUT/compare-layers-call3.log
(cd /tmp && timeout 60 python $OLDPWD/benchmarks/compare_passes.py --decode --set "COMBINE_TILE=(32, 1)" \
  --set "COMBINE_TILE=(8, 1)" --set "WINDOW_TILE=(64, 16, 1)" --layers 16 16384 32768 65536) 2>&1 | grep -v Warn \
  > $OUT/compare-tiles-call3.log; grep -c ms $OUT/compare-tiles-call3.log
