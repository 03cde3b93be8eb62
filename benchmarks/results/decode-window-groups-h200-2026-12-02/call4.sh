# One device call: where the decode step's time goes (search, search + partial kernel, whole step), and the step with
# programmatic dependent launch (DECODE_PDL) against without, with this tree's kernels.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
R=benchmarks/results/decode-window-groups-h200-2026-12-02
(cd /tmp && timeout 200 python $OLDPWD/$R/step_parts.py) 2>&1 | grep -v Warn | tee $OUT/step-parts-call4.log
(cd /tmp && timeout 200 python $OLDPWD/benchmarks/compare_passes.py --decode --set "DECODE_PDL=True" 16384 65536 1048576) 2>&1 | grep -v Warn | tee $OUT/compare-pdl-call4.log
