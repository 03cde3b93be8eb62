cd "$(dirname "$0")"
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
mkdir -p /tmp/oldp && ln -sfn $PWD/old-kernels/kernels /tmp/oldp/slkernels
B="--pass forward --setting released --no-million --lengths 16K,32K,64K,256K"
for run in new old new2 old2; do
  case $run in old*) PP=/tmp/oldp:$PYTHONPATH;; *) PP=$PYTHONPATH;; esac
  (cd /tmp && PYTHONPATH=$PP timeout 120 python $OLDPWD/benchmarks/run_bench.py --out $OUT/bench-$run $B 2>&1 | tail -5) | sed "s/^/$run /" | tee -a $OUT/bench.log
  rm -f $OUT/bench-$run/bench.png
done
timeout 90 python prof16k.py 2>&1 | grep -v Warn | sed "s/^/new /" | tee -a $OUT/prof.log
PYTHONPATH=/tmp/oldp:$PYTHONPATH timeout 90 python prof16k.py 2>&1 | grep -v Warn | sed "s/^/old /" | tee -a $OUT/prof.log
(cd tests && timeout 280 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "forward_grid or forward_long or inference_in_chunks or test_chunked_prefill_matches_whole or test_gradients" 2>&1 | grep -E "PASS|FAIL|ERROR|passed|failed|Error" | tail -60) > $OUT/gpu_tests.log
tail -3 $OUT/gpu_tests.log
