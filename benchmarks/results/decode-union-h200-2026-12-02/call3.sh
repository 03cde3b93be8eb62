source scripts/checkout_on_path.sh && importable_here $PWD
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/results/decode-union-h200-2026-12-02/debug_cover.py) 2>&1 | grep -v Warn | tee $OUT/debug-call3.log
