# One device call: the decode step as a model's graph holds it (16 steps over 16 caches in one graph, time per step),
# the row merged by the partial kernel's last program (decode.COMBINE_BY_LAST, this tree's default) against the combine
# kernel, each with and without programmatic dependent launch, and two larger merge tiles; registers of the partial
# kernel as the device's Triton compiles it.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
for k in decode decode:rows combine; do python benchmarks/sass_report.py $k --length 1048576 --tiles 1,16,1,3 2>&1 | grep -v Warn; done | tee $OUT/sass-call1.txt
(cd /tmp && timeout 450 python $OLDPWD/benchmarks/compare_passes.py --decode --set "COMBINE_BY_LAST=False" \
  --set "DECODE_PDL=True" --set "DECODE_PDL=True; COMBINE_BY_LAST=False" --set "LAST_TILE=(16, 64)" \
  --set "LAST_TILE=(16, 128)" --layers 16 16384 32768 65536 262144 1048576) 2>&1 | grep -v Warn \
  | tee $OUT/compare-layers-call1.log | grep -c ms
