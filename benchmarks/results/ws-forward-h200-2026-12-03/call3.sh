# One device call: the persistent warp-specialised kernel (kernels/triton_ops/attend_ws.py as committed; tiles BM, BN,
# STAGES, REGS, PERSISTENT) checked per tiling at small lengths, the GPU tests of the forward with it, then its span
# and window passes timed against the tl kernel at released 256K / 128K / 64K and balanced 256K, with the whole
# forward (span pass on either kernel) and dense SDPA.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
OK=""
for t in 64,128,2,240,1 64,128,2,240,0 64,128,3,240,1 64,64,4,240,1; do
  (cd /tmp && timeout 60 python $OLDPWD/benchmarks/ws_forward.py --check released:4096 balanced:16384 released:20000 \
    --tiles $t) 2>&1 | grep -v Warn > $OUT/check-$(echo $t | tr , _)-call3.log; echo "rc $? $t"
  if [ "$(grep -c EXACT $OUT/check-$(echo $t | tr , _)-call3.log)" = 3 ]; then OK="$OK $t"; fi
  grep "differences" $OUT/check-$(echo $t | tr , _)-call3.log | tail -1
done
echo "exact: $OK"
(cd tests && timeout 170 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k warp_specialised \
  test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-ws-call3.log
(cd /tmp && timeout 300 python $OLDPWD/benchmarks/ws_forward.py released:262144 released:131072 released:65536 \
  balanced:262144 --forward --tiles 64,128,2,240,1 64,128,2,240,0 64,128,3,240,1 --json $OUT/time-call3.json) 2>&1 \
  | grep -v Warn > $OUT/time-call3.log; grep "ms$\|efficiency\|L=" $OUT/time-call3.log
