# One device call (commit 115a76a): where a released decode step's time goes at 16K / 64K / 1M (search alone, the
# two attention kernels alone, the whole step, dense SDPA, the read floor), and the step under each alternative of
# profile_passes.VARIANTS (partial tilings, search pieces, search tilings, combine slices, programmatic dependent launch).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
(cd /tmp && timeout 560 python $OLDPWD/benchmarks/profile_passes.py --decode released 16384 65536 1048576) 2>&1 | grep -v Warn | tee $OUT/profile-decode-call5.log
