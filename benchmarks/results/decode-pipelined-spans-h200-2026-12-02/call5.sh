# One device call, the tree as committed (DECODE_TILE = (256, 16, 1, 2)): the kernel timeline of a 16-step graph at 16K
# and 64K (timeline.py of decode-last-merge-h200-2026-12-02), then settings whose balance the pipelined loop may have
# moved, at 16K-64K: the grouped window's loop in two stages, SPAN_FILL 6 and 12 (12 with the window still grouped),
# blocks of 32 keys.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
T=$PWD/benchmarks/results/decode-last-merge-h200-2026-12-02
(cd /tmp && for L in 16384 65536; do timeout 40 python $T/timeline.py $L; done) 2>&1 | grep '^{' > $OUT/timeline-call5.log; wc -l $OUT/timeline-call5.log
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode \
  --set "WINDOW_TILE=(128, 16, 2)" --set "SPAN_FILL=6" --set "SPAN_FILL=12; GROUPS_BELOW_PER_SM=14" \
  --set "DECODE_TILE=(256, 32, 1, 2)" --layers 16 16384 32768 65536) 2>&1 | grep -v Warn > $OUT/compare-call5.log; grep -c ms $OUT/compare-call5.log
