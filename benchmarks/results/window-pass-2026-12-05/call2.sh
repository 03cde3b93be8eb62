# Call 2: where one launch of this tree's default window pass (256K released) spends its time, per SASS
# instruction: Nsight Compute's source counters (warp stall samples and executed instructions per instruction) and
# the bytes each level of memory moved.
patch -p1 -s < benchmarks/results/window-pass-2026-12-05/window-epilogue.patch || exit 1  # the change, as the tree had it
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
F=benchmarks/results/window-pass-2026-12-05
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
M="--metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_write.sum,l1tex__t_bytes.sum,l1tex__m_xbar2l1tex_read_bytes.sum,smsp__inst_executed.sum,gpu__time_duration.sum"
(cd /tmp && timeout 300 ncu --clock-control none --section SourceCounters --section WarpStateStats $M -k regex:_entry_kernel \
  --launch-skip 1 --launch-count 1 -o $OUT/source python $OLDPWD/$F/window_pass.py --ncu released:262144) 2>&1 | grep -v Warn | tail -4
ncu --import $OUT/source.ncu-rep --page details --print-details all > $OUT/source-details.txt 2>&1
ncu --import $OUT/source.ncu-rep --page source --csv --print-source sass > $OUT/source-sass.csv 2>&1
head -c 600 $OUT/source-sass.csv; echo; wc -l $OUT/source-sass.csv
grep -E "bytes|sectors|inst_executed|Duration|duration" $OUT/source-details.txt | head -20
rm -f $OUT/source.ncu-rep.tmp
