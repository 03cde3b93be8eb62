# Call 2: Nsight Compute's counters of the search kernel at 256K released, six launches (ncu_search.py): the anchor
# key, the span mean's hi-only loop and the exact span mean, each in row order and in whole shared-end chains. Where
# do its bytes come from (DRAM or L2), and what do its warps wait on? Run on the commit that removed the order.
F=benchmarks/results/span-mean-shared-ends-h200-2026-12-04
patch -p1 -s < $F/shared-end-order.patch || exit 1  # the order was removed from the kernels after call 1
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats --section Occupancy"
M="--metrics dram__bytes_read.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct,l1tex__t_bytes.sum,l1tex__t_sector_hit_rate.pct,lts__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum"
(cd /tmp && timeout 420 ncu --clock-control none $S $M -k regex:_search_kernel --launch-count 6 -o $OUT/search \
  python $OLDPWD/$F/ncu_search.py 262144 released) 2>&1 | grep -v Warn | tail -12
[ -f $OUT/search.ncu-rep ] && ncu --import $OUT/search.ncu-rep --page details --print-details all > $OUT/search-details.txt 2>&1
grep -E "^  _search|Duration|dram__bytes_read.sum|lts__t_bytes.sum|lts__t_sector_hit_rate|l1tex__t_bytes.sum|l1tex__t_sector_hit|throughput.avg.pct|Memory Throughput|Stall|Warp Cycles Per Issued|Achieved Occupancy" $OUT/search-details.txt | head -90
rm -f $OUT/search.ncu-rep.tmp; ls -la $OUT
