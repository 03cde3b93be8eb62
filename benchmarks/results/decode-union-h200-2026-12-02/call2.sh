# One device call, the tree with the cover layout (decode_cover.py): the decode GPU tests (both layouts forced, and
# the default), then the step as a model's graph holds it (16 steps over 16 caches in one graph) at 16K-256K with the
# cover off, forced on, and three other tilings of it; the kernel timeline at 16K both ways.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd tests && timeout 200 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null --durations=8 -k decode test_triton_gpu.py) 2>&1 | tail -16 | tee $OUT/gpu-tests-decode-call2.log
(cd /tmp && timeout 230 python $OLDPWD/benchmarks/compare_passes.py --decode --set "DECODE_COVER=False" --set "DECODE_COVER=True" \
  --set "DECODE_COVER=True; COVER_TILE=(64, 8, 2, 2)" --set "DECODE_COVER=True; COVER_TILE=(32, 4, 2, 2)" \
  --set "DECODE_COVER=True; COVER_TILE=(64, 4, 2, 4)" --layers 16 16384 32768 65536 131072 262144) 2>&1 | grep -v Warn > $OUT/compare-cover-call2.log; grep -c ms $OUT/compare-cover-call2.log
R=$PWD/benchmarks/results/decode-last-merge-h200-2026-12-02  # timeline.py (a copy of it ran, the same bytes)
(cd /tmp && timeout 30 python $R/timeline.py 16384 && timeout 30 python $R/timeline.py 16384 DECODE_COVER=False) 2>&1 | grep '^{' > $OUT/timeline-call2.log; wc -l $OUT/timeline-call2.log
