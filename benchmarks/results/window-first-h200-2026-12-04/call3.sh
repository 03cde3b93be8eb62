# Call 3: the span lists sorted as one flat list (the group above the list's key, compact keys) and the two fills
# folded into the list kernels, against commit fe05404's kernels (build/base/slkernels_base, carried) in one process
# (forward_host.py of 2026-12-04's first results), the host stages again, `slconvert bench --pass forward` at
# 16K-64K, and the GPU tests of everything that reads the span lists or their keys (forward at long lengths and a
# forward grid, chunked prefill, inference in chunks, gradients in bf16 at head dim 128 of both keys, the
# warp-specialised backward in bf16).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/base:$PYTHONPATH
D=benchmarks/results/window-first-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
for n in 16384 32768; do timeout 90 python benchmarks/results/decode-layers-h200-2026-12-04/forward_host.py $n slkernels slkernels_base >> $OUT/forward-host-call3.jsonl 2>>$OUT/forward-host-call3.err; done
python -c "
import json
for line in open('$OUT/forward-host-call3.jsonl'):
    d = json.loads(line)
    if 'first_kernels' in d: d.pop('first_kernels')
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()})
"
tail -2 $OUT/forward-host-call3.err
timeout 60 python $D/host_stages.py 16384 | tee -a $OUT/host-stages-call3.jsonl
(cd /tmp && timeout 150 python -m slconvert.cli bench --pass forward --lengths 16K,32K,64K --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -10 | sed 's/.*\r//' > $OUT/bench-call3.log; tail -8 $OUT/bench-call3.log
(cd tests && timeout 330 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf \
  -k "forward_long_sampled_rows or (test_forward_grid and 128) or chunked_prefill or inference_in_chunks or ((test_gradients or span_mean_gradients) and 128 and dtype0) or (warp_specialised_backward and dtype0)" \
  test_triton_gpu.py) > $OUT/gpu-tests-call3.log 2>&1; tail -8 $OUT/gpu-tests-call3.log
