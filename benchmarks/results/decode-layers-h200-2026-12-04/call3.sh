# Call 3: the forward's host work before its span pass cut (the span lists finished in one launch instead of five
# torch operations, the window lists built after the span pass's launch, the device capability cached): its
# exposure at 16K and 32K against the code before it (build/base/slkernels_base, a copy of commit d70396b's
# kernels) in one process (forward_host.py); `slconvert bench --pass forward` at 16K-64K; the GPU tests of the
# forward, prefill chunks and inference chunks, and the bf16 gradients.
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/base:$PYTHONPATH
D=benchmarks/results/decode-layers-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
for n in 16384 32768; do timeout 90 python $D/forward_host.py $n slkernels slkernels_base >> $OUT/forward-host-call3.jsonl 2>>$OUT/forward-host-call3.err; done
python -c "
import json
for line in open('$OUT/forward-host-call3.jsonl'):
    d = json.loads(line)
    if 'first_kernels' in d: d.pop('first_kernels')
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()})
"
(cd /tmp && timeout 150 python -m slconvert.cli bench --pass forward --lengths 16K,32K,64K --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -14 | sed 's/.*\r//' > $OUT/bench-call3.log; tail -8 $OUT/bench-call3.log
(cd tests && timeout 240 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf \
  -k "forward_long_sampled_rows or chunked_prefill or inference_in_chunks or (gradients and bfloat16 and not span_mean)" \
  test_triton_gpu.py) > $OUT/gpu-tests-call3.log 2>&1; tail -6 $OUT/gpu-tests-call3.log
