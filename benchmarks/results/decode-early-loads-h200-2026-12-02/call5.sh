# One device call, the tree with decode.SPAN_FILL = 10: the span chunks' pipeline stages and the search's pieces at
# 16K and 32K (16 steps per graph).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
(cd /tmp && timeout 150 python $OLDPWD/benchmarks/compare_passes.py --decode --set "DECODE_TILE=(128, 16, 1, 4)" \
  --set "DECODE_TILE=(128, 16, 1, 2)" --set "SPAN_FILL=9" --set "SEARCH_SPLIT=(16, 64)" \
  --layers 16 16384 32768) 2>&1 | grep -v Warn > $OUT/compare-call5.log; grep -c ms $OUT/compare-call5.log
