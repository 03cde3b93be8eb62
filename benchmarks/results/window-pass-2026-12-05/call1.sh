# One device call: window_pass.py (four setting/lengths), then Nsight Compute's counters of one launch of each copy's
# default window pass at 256K released. build/head/slkernels_head: the kernels of commit e94db77, before the change
# (`git archive HEAD kernels`, carried to the machine).
patch -p1 -s < benchmarks/results/window-pass-2026-12-05/window-epilogue.patch || exit 1  # the change, as the tree had it
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
F=benchmarks/results/window-pass-2026-12-05
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
(cd /tmp && timeout 330 python $OLDPWD/$F/window_pass.py) 2>&1 | grep -v Warn | tee $OUT/window-call1.log
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats --section Occupancy --section SchedulerStats"
(cd /tmp && timeout 150 ncu --clock-control none $S -k regex:_entry_kernel --launch-count 2 -o $OUT/window \
  python $OLDPWD/$F/window_pass.py --ncu released:262144) 2>&1 | grep -v Warn | tail -4
[ -f $OUT/window.ncu-rep ] && ncu --import $OUT/window.ncu-rep --page details --print-details all > $OUT/window-details.txt 2>&1
grep -E "^  _entry|Duration|Registers Per|Shared Memory Config|Dynamic Shared|Achieved Occupancy|Theoretical Occupancy|Block Limit|Memory Throughput|DRAM Throughput|Compute \(SM\)|Warp Cycles Per Issued|Issued Ipc|No Eligible|Stall" $OUT/window-details.txt | head -70
rm -f $OUT/window.ncu-rep.tmp
