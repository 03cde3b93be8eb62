# Call 1: the generation GPU tests of tests/test_surgery_attention.py, unbuffered (the bf16 failure of 2026-12-03);
# then `slconvert bench --pass decode` with the decode graph timed over 16 steps per graph (a cache per step); then
# the released forward's exposure to the host at 16K and 32K (forward_host.py).
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/decode-layers-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $OUT/card-call1.txt
(cd tests && PYTHONUNBUFFERED=1 timeout 200 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf \
  --tb=long -m gpu test_surgery_attention.py) > $OUT/gpu-tests-surgery-call1.log 2>&1; tail -5 $OUT/gpu-tests-surgery-call1.log
(cd /tmp && timeout 200 python -m slconvert.cli bench --pass decode --out $OUT/bench) 2>&1 | grep -v Warn | tail -40 \
  | sed 's/.*\r//' > $OUT/bench-call1.log; tail -16 $OUT/bench-call1.log
for n in 16384 32768; do timeout 60 python $D/forward_host.py $n >> $OUT/forward-host-call1.jsonl 2>$OUT/forward-host-$n.err; done
python -c "
import json
for line in open('$OUT/forward-host-call1.jsonl'):
    d = json.loads(line); print(d['length'], {n: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d[n].items() if k != 'first_kernels'} for n in ('released', 'dense')})
"
