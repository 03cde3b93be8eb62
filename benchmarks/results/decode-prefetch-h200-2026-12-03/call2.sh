# One device call: the tree with decode.LONG_SPAN_BLOCKS (span chunks of at least 6 blocks only where a span holds
# at least 40 or 48 blocks) against the committed plan (None), decode at 16K-1M (16 steps per graph, 16 layers);
# then the decode GPU tests with (6, 40) and the GPU tests of generation through converted models.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && timeout 240 python $OLDPWD/benchmarks/compare_passes.py --decode --set "LONG_SPAN_BLOCKS=(6, 40)" \
  --set "LONG_SPAN_BLOCKS=(6, 48)" --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn \
  > $OUT/compare-call2.log; grep -c ms $OUT/compare-call2.log
(cd tests && timeout 150 python -c "
import sys, pytest, slkernels.triton_ops.decode as d
d.LONG_SPAN_BLOCKS = (6, 40)
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--rootdir', '$PWD', '-c', '/dev/null', '-k', 'decode', 'test_triton_gpu.py']))
") 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call2.log
timeout 160 python -m pytest -q -p no:cacheprovider -m gpu tests/test_surgery_attention.py 2>&1 | tail -3 | tee $OUT/gpu-tests-generation-call2.log
