# One device call: every variant of the warp-specialised passes checked on its own (a hang costs one variant's
# timeout), then those that matched the tl kernel timed at 256K released, 64K released and 256K balanced.
# Tiles: BM, BN, STAGES, AHEAD (0 scores then values; 1 next block's scores before this block's softmax; 2
# FlashAttention-3's order), REGS, Q_SMEM, PINGPONG (1 the consumers take turns issuing; 3 also no mask branch).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
OK=""
for t in 64,64,4,1,240,0,0 64,128,2,0,240,1,0 64,128,2,2,240,1,0 64,128,2,2,240,1,1 64,128,2,2,240,1,3 \
         64,128,2,1,240,1,0 64,128,2,1,240,1,1 64,64,4,1,240,1,1 64,128,3,1,240,1,1; do
  (cd /tmp && timeout 60 python $OLDPWD/benchmarks/ws_forward.py --check released:4096 balanced:16384 released:20000 \
    --tiles $t) 2>&1 | grep -v Warn > $OUT/check-$t-call2.log; echo "rc $? $t"
  if [ "$(grep -c EXACT $OUT/check-$t-call2.log)" = 3 ]; then OK="$OK $t"; fi
  grep "differences" $OUT/check-$t-call2.log | tail -1
done
echo "exact: $OK"
(cd /tmp && timeout 330 python $OLDPWD/benchmarks/ws_forward.py released:262144 released:65536 balanced:262144 \
  --tiles $OK --json $OUT/time-call2.json) 2>&1 | grep -v Warn > $OUT/time-call2.log; grep "ms$\|efficiency" $OUT/time-call2.log
