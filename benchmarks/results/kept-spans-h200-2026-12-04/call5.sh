# Call 5: the spans' and window's dk/dv (`attend_bwd_ws`) with its per-tile range test reduced within each warp
# (EDGE 1: two values a thread, one warp reduction each) against the test over the scores' layout (EDGE 0, 16 values a
# thread and shuffles), and with the loader's registers moved to the consumers (240 / 24); exactness against the `tl`
# kernel and times (benchmarks/ws_dkdv.py, the 6th tiling field is EDGE).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
timeout 420 python -u benchmarks/ws_dkdv.py released:262144 released:65536 balanced:262144 released:16384 \
  --tiles 64,64,3,232,40,0 64,64,3,232,40,1 64,64,3,240,24,1 --json $OUT/ws-dkdv-call5.json 2>&1 | grep -v Warn \
  | tee $OUT/ws-dkdv-call5.log
