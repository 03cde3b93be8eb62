# One device call, the tree as committed plus the SPAN_MIN_BLOCKS setting (1: the committed plan): decode at 16K-1M
# (16 steps per graph, 16 layers) with spans' chunks of at least 4, 6 or 8 blocks, and SPAN_FILL 7, against the
# committed plan; then the forward passes at 256K released with the anchor and the span-mean search key (#18: the
# search in pieces of 48 anchors against one piece).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 300 python $OLDPWD/benchmarks/compare_passes.py --decode --set "SPAN_MIN_BLOCKS=4" \
  --set "SPAN_MIN_BLOCKS=6" --set "SPAN_MIN_BLOCKS=8" --set "SPAN_FILL=7" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call1.log; grep -c ms $OUT/compare-call1.log
(cd /tmp && timeout 100 python $OLDPWD/benchmarks/profile_passes.py released 262144 --forward) > $OUT/profile-anchor-call1.log 2>&1; tail -5 $OUT/profile-anchor-call1.log
(cd /tmp && timeout 150 python $OLDPWD/benchmarks/profile_passes.py released 262144 --span-mean --forward) > $OUT/profile-span-mean-call1.log 2>&1; tail -8 $OUT/profile-span-mean-call1.log
