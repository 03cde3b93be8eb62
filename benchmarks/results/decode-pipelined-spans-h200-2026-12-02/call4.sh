# One device call: the tree as committed (the span chunks' loop in two stages, windows by query row in a loop of their
# own, chunks of about 256 keys: DECODE_TILE = (256, 16, 1, 2)) against slk_old (commit a067b88), decode at 16K-1M
# (16 steps per graph, 16 layers), with chunks of about 128 and 512 keys; then the decode GPU tests and the GPU tests of
# generation through converted models on the tree.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_old \
  --set "DECODE_TILE=(128, 16, 1, 2)" --set "DECODE_TILE=(512, 16, 1, 2)" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call4.log; grep -c ms $OUT/compare-call4.log
(cd tests && timeout 150 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call4.log
timeout 200 python -m pytest -q -p no:cacheprovider -m gpu tests/test_surgery_attention.py 2>&1 | tail -3 | tee $OUT/gpu-tests-generation-call4.log
