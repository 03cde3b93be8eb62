# One device call. Tree: commit 6a1a9ff with cover-v2.patch applied (package slkernels); slk_new = 6a1a9ff's kernels
# (span programs load their inputs before the wait, commit b39cbdb); slk_old = 0ea1d31's kernels (before it).
# 16 decode steps per graph at 16K-1M; then the decode GPU tests that force the cover each way.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 300 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_new,slk_old \
  --set "DECODE_COVER=False" --set "DECODE_COVER=True" --set "DECODE_COVER=True; COVER_TILE=(64, 4, 2, 4)" \
  --layers 16 16384 32768 65536 1048576) 2>&1 | grep -v Warn > $OUT/compare-call1.log; grep -c ms $OUT/compare-call1.log
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k "decode and cover" test_triton_gpu.py) 2>&1 | tail -6 | tee $OUT/gpu-tests-cover-call1.log
