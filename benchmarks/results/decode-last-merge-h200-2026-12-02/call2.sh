# One device call, this tree with programmatic dependent launch on (decode.DECODE_PDL True) and the combine kernel: every
# GPU test of tests/test_triton_gpu.py, the GPU tests of generation through converted models (dynamic and static
# caches, compiled, replayed from graphs), the kernel timeline of a 16-step graph at 16K and 64K, and a few settings
# of the search pieces and span chunks at 16K-64K (16 steps a graph).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
R=$PWD/benchmarks/results/decode-last-merge-h200-2026-12-02
(cd tests && timeout 260 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null test_triton_gpu.py) 2>&1 | tail -5 | tee $OUT/gpu-tests-call2.log
(cd tests && timeout 200 python -m pytest -v -p no:cacheprovider --rootdir $PWD -c /dev/null -m gpu test_surgery_attention.py) 2>&1 | grep -E "PASS|FAIL|ERROR|passed|failed|Error" | tail -8 | tee -a $OUT/gpu-tests-call2.log
(cd /tmp && for L in 16384 65536; do timeout 40 python $R/timeline.py $L; done) 2>&1 | grep -v Warn | tee $OUT/timeline-call2.log
(cd /tmp && timeout 100 python $OLDPWD/benchmarks/compare_passes.py --decode --set "SEARCH_SPLIT=(16, 64)" \
  --set "SPAN_FILL=12" --set "DECODE_PDL=False" --layers 16 16384 32768 65536) 2>&1 | grep -v Warn > $OUT/compare-layers-call2.log; grep -c ms $OUT/compare-layers-call2.log
