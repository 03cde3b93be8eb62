# One device call: decode's span-chunk floor (decode.SPAN_MIN_BLOCKS, committed (6, 40)) at (5, 40) and (7, 40)
# against it, released and balanced, 16K and 32K (16 steps per graph, 16 layers), dense SDPA in the same process.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode --set "SPAN_MIN_BLOCKS=(5, 40)" \
  --set "SPAN_MIN_BLOCKS=(7, 40)" --layers 16 16384 32768) 2>&1 | grep -v Warn > $OUT/compare-call1.log
tail -30 $OUT/compare-call1.log
