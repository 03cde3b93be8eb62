# One device call: the window's chunks per KV head (this tree's default) or per query row (WINDOW_GROUPS=False), and
# spans cut into more chunks where they leave the GPU short of programs (SPAN_FILL), against 83d4c17
# (old-kernels/slk_old), at 16K-1M.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 540 python $OLDPWD/benchmarks/compare_passes.py --decode \
  --packages slkernels,slk_old --set "WINDOW_GROUPS=False" --set "SPAN_FILL=8" --set "SPAN_FILL=12" --set "SPAN_FILL=16" \
  --set "DECODE_TILE=(64, 16, 1, 3)" 16384 32768 65536 131072 262144 524288 1048576) 2>&1 | grep -v Warn | tee $OUT/compare-call2.log
