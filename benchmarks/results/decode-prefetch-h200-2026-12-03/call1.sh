# One device call: the tree with decode.PREFETCH_L2 (the grouped window's programs prefetch into L2 the keys and values
# the spans may read, while the search runs) against the committed plan (0: off), decode at 16K-64K (16 steps per
# graph, 16 layers): 0.45 (caches up to 0.45 of the L2: 16K), 1.4 (up to 64K), and 0.45 with span chunks of at least
# 6 blocks; then the decode GPU tests with PREFETCH_L2 = 2 (every test's cache prefetched where the window is grouped).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch; print('L2 bytes', torch.cuda.get_device_properties(0).L2_cache_size)" | tee -a $OUT/card-call1.txt
(cd /tmp && timeout 240 python $OLDPWD/benchmarks/compare_passes.py --decode --set "PREFETCH_L2=0.45" \
  --set "PREFETCH_L2=1.4" --set "PREFETCH_L2=0.45; SPAN_MIN_BLOCKS=6" \
  --layers 16 16384 32768 65536) 2>&1 | grep -v Warn > $OUT/compare-call1.log; grep -c ms $OUT/compare-call1.log
(cd tests && timeout 150 python -c "
import sys, pytest, slkernels.triton_ops.decode as d
d.PREFETCH_L2 = 2.0
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--rootdir', '$PWD', '-c', '/dev/null', '-k', 'decode', 'test_triton_gpu.py']))
") 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call1.log
