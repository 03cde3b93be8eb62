# One device call: the span chunks' loop pipelined (tl.range with DECODE_TILE's stages: cp.async copies of the next
# blocks while one is merged; windows by query row take the same loop; package slkernels) against commit a067b88
# (slk_old: a plain range loop, each block waits for its own loads), decode at 16K-1M (16 steps per graph, 16 layers),
# with stages 1 (no pipelining), 2 and 4, SPAN_FILL 8, chunks of about 256 keys, and the grouped window's
# loop in two stages; then the decode GPU tests
# on the pipelined tree.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && timeout 340 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_old \
  --set "DECODE_TILE=(128, 16, 1, 1)" --set "DECODE_TILE=(128, 16, 1, 2)" --set "DECODE_TILE=(128, 16, 1, 4)" \
  --set "SPAN_FILL=8" --set "DECODE_TILE=(256, 16, 1, 3)" --set "WINDOW_TILE=(128, 16, 2)" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call2.log; grep -c ms $OUT/compare-call2.log
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call2.log
