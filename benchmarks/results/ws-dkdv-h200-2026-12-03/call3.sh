# Call 3, on the code of commit ff0198d (the kernels of call 2): the six span-mean gradient tests at head dim 128
# that call 2's time limit left out (their dk/dv on the warp-specialised kernel), then the whole backward and forward + backward with and without it at
# released 128K and balanced 256K.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
B=$PWD/benchmarks
(cd tests && timeout 150 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "span_mean_gradients and 128" test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-call3.log
(cd /tmp && timeout 200 python $B/ws_dkdv.py released:131072 balanced:262144 --backward \
  --json $OUT/backward-call3.json) 2>&1 | grep -v Warn | tee $OUT/backward-call3.log | grep "ms$"
