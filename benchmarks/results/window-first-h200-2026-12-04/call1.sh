# Call 1: the short forward without gradients with its window pass first (kernels/triton_ops/mix.py,
# function.WINDOW_FIRST_MAX_ROWS) against the same code with it last, in one process (window_first.py), at 8K-32K;
# `slconvert bench --pass forward` at 16K-64K; the GPU tests of the new order, the forward at long lengths
# (window first up to 32K rows) and prefill / inference chunks.
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/window-first-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call1.txt
for n in 8192 16384 32768; do timeout 100 python $D/window_first.py $n >> $OUT/window-first-call1.jsonl 2>>$OUT/window-first-call1.err; done
timeout 100 python $D/window_first.py 16384 span_mean >> $OUT/window-first-call1.jsonl 2>>$OUT/window-first-call1.err
python -c "
import json
for line in open('$OUT/window-first-call1.jsonl'):
    d = json.loads(line)
    if 'first_kernels' in d: d.pop('first_kernels')
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()})
"
tail -3 $OUT/window-first-call1.err
(cd /tmp && timeout 150 python -m slconvert.cli bench --pass forward --lengths 16K,32K,64K --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -14 | sed 's/.*\r//' > $OUT/bench-call1.log; tail -8 $OUT/bench-call1.log
(cd tests && timeout 200 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf \
  -k "window_first or (forward_long_sampled_rows and not 65536) or chunked_prefill" \
  test_triton_gpu.py) > $OUT/gpu-tests-call1.log 2>&1; tail -6 $OUT/gpu-tests-call1.log
