cd "$(dirname "$0")"
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
mkdir -p /tmp/oldp && ln -sfn $PWD/old-kernels/kernels /tmp/oldp/slkernels
B="--pass forward_backward --setting released --no-million --lengths 16K,64K,256K"
for run in new old; do
  case $run in old*) PP=/tmp/oldp:$PYTHONPATH;; *) PP=$PYTHONPATH;; esac
  (cd /tmp && PYTHONPATH=$PP timeout 150 python $OLDPWD/benchmarks/run_bench.py --out $OUT/bench-fb-$run $B 2>&1 | tail -4) | sed "s/^/$run /" | tee -a $OUT/bench.log
  rm -f $OUT/bench-fb-$run/bench.png
done
(cd /tmp && timeout 100 python $OLDPWD/benchmarks/run_bench.py --out $OUT/bench-fwd --pass forward --no-million --lengths 16K,32K,64K,256K 2>&1 | tail -9) | sed "s/^/both /" | tee -a $OUT/bench.log
rm -f $OUT/bench-fwd/bench.png
(cd tests && timeout 170 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py -k "span_mean_forward_long or span_mean_chunked or auto_picks or test_decode" 2>&1 | grep -E "PASS|FAIL|ERROR|passed|failed|Error" | tail -60) > $OUT/gpu_tests.log
grep -c PASSED $OUT/gpu_tests.log; grep -v PASSED $OUT/gpu_tests.log | tail -5
