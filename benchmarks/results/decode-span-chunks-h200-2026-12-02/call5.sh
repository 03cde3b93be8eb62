# One device call (the session's fifth), the tree of commit 622d824 (GATES_BEFORE_WAIT as committed): the combine's
# tiling (COMBINE_TILE, columns of D per program and warps; committed (16, 1)) timed again now that the combine
# takes the gates before its wait, decode at 16K-1M (16 steps per graph, 16 layers).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
(cd /tmp && timeout 240 python $OLDPWD/benchmarks/compare_passes.py --decode --set "COMBINE_TILE=(32, 1)" \
  --set "COMBINE_TILE=(64, 2)" --set "COMBINE_TILE=(128, 4)" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call5.log; grep -c ms $OUT/compare-call5.log
