# Call 4 (commit e8a3faa): Nsight Compute's counters of the two warp-specialised backward kernels at 64K released, one
# launch each from benchmarks/ncu_passes.py's second round: the spans' dk/dv (_ws_dkdv_kernel, the pass now the
# largest of a step) and the span dq with one accumulator (_ws_dq_kernel), for what their warps wait on.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
S="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section InstructionStats --section SourceCounters --section LaunchStats --section Occupancy"
timeout 200 ncu --clock-control none $S -k regex:_ws_dkdv_kernel --launch-skip 3 --launch-count 1 -o $OUT/dkdv \
  python benchmarks/ncu_passes.py released 65536 2>&1 | grep -v Warn | tail -5
timeout 150 ncu --clock-control none $S -k regex:_ws_dq_kernel --launch-skip 1 --launch-count 1 -o $OUT/span_dq \
  python benchmarks/ncu_passes.py released 65536 2>&1 | grep -v Warn | tail -5
for r in dkdv span_dq; do
  [ -f $OUT/$r.ncu-rep ] || continue
  ncu --import $OUT/$r.ncu-rep --page details --print-details all > $OUT/$r-details.txt 2>&1
  ncu --import $OUT/$r.ncu-rep --page source --csv --print-source sass > $OUT/$r-sass.csv 2>&1
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|No Eligible|Stall|Warp Cycles Per Issued|Tensor|Registers|Achieved Occupancy" $OUT/$r-details.txt | head -40
done
ls -la $OUT
