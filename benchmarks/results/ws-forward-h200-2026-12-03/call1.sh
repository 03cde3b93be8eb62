# One device call: the warp-specialised forward passes (kernels/triton_ops/attend_ws.py) against the tl entry kernel.
# First a check at small lengths under a short timeout (a hang or a wrong barrier protocol stops here), then the
# timing at 256K released, 64K released and 256K balanced under three tilings (BM, BN, STAGES, AHEAD, REGS).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
T="64,64,4,1,240 64,64,3,1,240 64,128,2,0,240"
(cd /tmp && timeout 150 python $OLDPWD/benchmarks/ws_forward.py --check released:4096 balanced:16384 released:20000 \
  --tiles $T --json $OUT/check-call1.json) 2>&1 | grep -v Warn | tee $OUT/check-call1.log | tail -12
if grep -q "largest differences" $OUT/check-call1.log && ! grep -q "Error\|Traceback" $OUT/check-call1.log; then
  (cd /tmp && timeout 300 python $OLDPWD/benchmarks/ws_forward.py released:262144 released:65536 balanced:262144 \
    --tiles $T --json $OUT/time-call1.json) 2>&1 | grep -v Warn > $OUT/time-call1.log; tail -40 $OUT/time-call1.log
fi
