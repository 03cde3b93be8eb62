# One device call: occupancy.py at 256K (released and balanced), the card first.
source scripts/checkout_on_path.sh && importable_here $PWD
F=benchmarks/results/span-mean-search-occupancy-2026-12-05
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 500 python $OLDPWD/$F/occupancy.py 262144) 2>&1 | grep -v Warn | tee $OUT/occupancy-call1.log
