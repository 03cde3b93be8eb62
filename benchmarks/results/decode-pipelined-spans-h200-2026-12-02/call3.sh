# One device call: the tree with DECODE_TILE = (128, 16, 1, 2) (the span chunks' loop in two stages; windows by query
# row take the same loop) against slk_split (commit a067b88 with only the loop pipelined in two stages, the window's
# and the spans' loops apart) and slk_old (commit a067b88), decode at 16K-1M (16 steps per graph, 16 layers), with
# chunks of about 256 and 64 keys and SPAN_FILL 8 and 9 in two stages; then the GPU tests of generation through
# converted models on the tree.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
(cd /tmp && timeout 300 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_split,slk_old \
  --set "DECODE_TILE=(256, 16, 1, 2)" --set "DECODE_TILE=(64, 16, 1, 2)" --set "SPAN_FILL=8" --set "SPAN_FILL=9" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call3.log; grep -c ms $OUT/compare-call3.log
timeout 220 python -m pytest -q -p no:cacheprovider -m gpu tests/test_surgery_attention.py 2>&1 | tail -3 | tee $OUT/gpu-tests-generation-call3.log
