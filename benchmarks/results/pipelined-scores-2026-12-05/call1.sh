# One device call: pipelined.py (five setting/lengths), the card first, on commit e94db77 with the window pass's
# one-tile mix (../window-pass-2026-12-05/window-epilogue.patch) and the pipelined loop (pipelined-scores.patch).
patch -p1 -s < benchmarks/results/window-pass-2026-12-05/window-epilogue.patch || exit 1
patch -p1 -s < benchmarks/results/pipelined-scores-2026-12-05/pipelined-scores.patch || exit 1
source scripts/checkout_on_path.sh && importable_here $PWD
F=benchmarks/results/pipelined-scores-2026-12-05
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 500 python $OLDPWD/$F/pipelined.py) 2>&1 | grep -v Warn | tee $OUT/pipelined-call1.log
